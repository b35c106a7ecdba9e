"""Any gymnasium env as a task family: declared parameters, their distributions, paths, errors and reuse."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import metasgd_rl as msr
from metasgd_rl.checks import _compare_vector_with_singles
from metasgd_rl.parameters import ParameterPathError, parse_distribution
from metasgd_rl.registry import _REGISTRY

CARTPOLE = {"length": msr.Uniform(0.25, 1.0), "masspole": msr.LogUniform(0.05, 0.2)}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- distributions ---------------------------------------------------------------------------------------------


def test_distributions_draw_from_their_ranges_reproducibly():
    u = msr.Uniform(-1.0, 2.0).draw(_rng(), (20000,))
    assert u.min() >= -1.0 and u.max() <= 2.0 and abs(u.mean() - 0.5) < 0.03
    lu = msr.LogUniform(0.1, 10.0).draw(_rng(), (20000,))
    assert lu.min() >= 0.1 and lu.max() <= 10.0 and abs(np.log(lu).mean()) < 0.05  # uniform in log space
    assert abs(np.mean(lu < 1.0) - 0.5) < 0.02
    c = msr.Choice((-1.0, 1.0)).draw(_rng(), (1000,))
    assert set(c.tolist()) == {-1.0, 1.0} and abs(c.mean()) < 0.1
    vectors = msr.Choice(([1.0, 0.0], [0.0, 1.0])).draw(_rng(), (50, 2))
    assert vectors.shape == (50, 2) and set(map(tuple, vectors.tolist())) == {(1.0, 0.0), (0.0, 1.0)}
    np.testing.assert_array_equal(msr.Uniform(0, 1).draw(_rng(3), (5,)), msr.Uniform(0, 1).draw(_rng(3), (5,)))


def test_distributions_round_trip_through_their_dict_form():
    for dist in (msr.Uniform(0.5, 2.0), msr.LogUniform(0.3, 3.0, scale=True), msr.Choice((-1.0, 1.0)),
                 msr.Uniform(0.0, 1.0, shape=(3,))):
        assert parse_distribution(json.loads(json.dumps(dist.to_dict()))) == dist


@pytest.mark.parametrize("spec, message", [
    ({"uniform": [2.0, 1.0]}, r"low <= high"),
    ({"log_uniform": [0.0, 1.0]}, r"low must be > 0"),
    ({"choice": []}, r"at least one"),
    ({"uniform": [0.0, 1.0], "choice": [1.0]}, r"exactly one of the keys"),
    ({"normal": [0.0, 1.0]}, r"exactly one of the keys \['choice', 'log_uniform', 'uniform'\]"),
    ({"uniform": [0.0]}, r"uniform takes \[low, high\]"),
    ({"uniform": [0.0, 1.0], "shape": [0]}, r"positive sizes"),
    (0.5, r"expected a Distribution"),
])
def test_bad_distributions_are_refused_with_the_reason(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        parse_distribution(spec, name="length")


# -- declaring a family ----------------------------------------------------------------------------------------


def test_a_declared_cartpole_family_passes_the_check_and_its_tasks_reach_the_env():
    family = msr.GymTaskFamily("CartPole-v1", CARTPOLE, max_episode_steps=50)
    assert family.max_episode_steps == 50 and family.action_space == gym.spaces.Discrete(2)
    msr.check_task_family(family)
    tasks = family.sample_tasks(4, _rng())
    assert all(set(t) == {"length", "masspole"} and 0.25 <= t["length"] <= 1.0 for t in tasks)
    env = family.make_env(tasks[1])
    assert env.unwrapped.length == tasks[1]["length"] and env.unwrapped.masspole == tasks[1]["masspole"]
    assert family.sample_tasks(4, _rng()) == tasks  # seeded
    assert not {json.dumps(t) for t in tasks} & {json.dumps(t) for t in family.sample_tasks(4, _rng(), "test")}


def test_the_horizon_defaults_to_the_registered_time_limit():
    assert msr.GymTaskFamily("Pendulum-v1", {"m": msr.Uniform(0.5, 2.0)}).max_episode_steps == 200


def test_a_misspelt_parameter_fails_when_the_family_is_declared():
    with pytest.raises(ParameterPathError, match=r"has no parameter 'lenght'.*Did you mean 'length'"):
        msr.GymTaskFamily("CartPole-v1", {"lenght": msr.Uniform(0.25, 1.0)})
    with pytest.raises(ParameterPathError, match=r"'length' \(float\) has no attribute 'x'"):
        msr.GymTaskFamily("CartPole-v1", {"length.x": msr.Uniform(0.25, 1.0)})
    with pytest.raises(ParameterPathError, match=r"only numbers and numeric arrays"):
        msr.GymTaskFamily("CartPole-v1", {"kinematics_integrator": msr.Uniform(0.0, 1.0)})


def test_a_misspelt_parameter_fails_at_registration_in_both_forms():
    with pytest.raises(ParameterPathError, match=r"no parameter 'polelength'"):
        msr.register_task_family("BadCartPole-v0", entry_point=msr.GymTaskFamily, env_id="CartPole-v1",
                                 parameters={"polelength": {"uniform": [0.2, 1.0]}})
    with pytest.raises(ParameterPathError, match=r"no parameter 'gravity'"):

        @msr.register_task_family("BadPendulum-v0")
        class BadPendulum(msr.GymTaskFamily):
            env_id = "Pendulum-v1"
            parameters = {"gravity": msr.Uniform(8.0, 12.0)}  # Pendulum calls it g

    assert "BadCartPole-v0" not in _REGISTRY and "BadPendulum-v0" not in _REGISTRY


def test_registration_of_a_valid_declaration_builds_a_usable_family():
    msr.register_task_family("TestPendulumGravity-v0", entry_point=msr.GymTaskFamily, env_id="Pendulum-v1",
                             parameters={"g": {"uniform": [8.0, 12.0]}}, max_episode_steps=20)
    try:
        family = msr.make_task_family("TestPendulumGravity-v0")
        assert family.max_episode_steps == 20 and set(family.sample_tasks(1, _rng())[0]) == {"g"}
    finally:
        del _REGISTRY["TestPendulumGravity-v0"]


def test_a_value_of_the_wrong_shape_is_refused():
    pytest.importorskip("mujoco")
    with pytest.raises(ParameterPathError, match=r"'model.body_mass' has shape \(8,\).*draws shape \(\)"):
        msr.GymTaskFamily("HalfCheetah-v5", {"model.body_mass": msr.Uniform(0.5, 2.0)})
    with pytest.raises(ParameterPathError, match=r"factors of shape \(3,\).*do not broadcast"):
        msr.GymTaskFamily("HalfCheetah-v5", {"model.body_mass": msr.Uniform(0.5, 2.0, shape=(3,), scale=True)})


def test_bad_tasks_are_refused_before_any_env_is_touched():
    family = msr.GymTaskFamily("CartPole-v1", CARTPOLE)
    with pytest.raises(ValueError, match=r"missing \['masspole'\], unknown \['mass'\]"):
        family.make_env({"length": 0.5, "mass": 0.1})
    with pytest.raises(ValueError, match=r"length=\[0.5, 0.6\] must be finite numbers of shape \(\)"):
        family.make_vector_env([{"length": [0.5, 0.6], "masspole": 0.1}], 2)
    with pytest.raises(ValueError, match=r"length=nan"):
        family.make_env({"length": math.nan, "masspole": 0.1})


# -- scaled vector parameters of a MuJoCo model ----------------------------------------------------------------


def test_scaled_mujoco_parameters_multiply_the_defaults_and_change_the_dynamics():
    pytest.importorskip("mujoco")
    scale = msr.LogUniform(1.5**-3, 1.5**3, scale=True)
    family = msr.GymTaskFamily("HalfCheetah-v5", {"model.body_mass": scale, "model.dof_damping": scale},
                               max_episode_steps=20)
    default = gym.make("HalfCheetah-v5").unwrapped.model
    tasks = family.sample_tasks(2, _rng())
    assert len(tasks[0]["model.body_mass"]) == 8 and len(tasks[0]["model.dof_damping"]) == 9
    env = family.make_env(tasks[0])
    np.testing.assert_allclose(env.unwrapped.model.body_mass, default.body_mass * tasks[0]["model.body_mass"])
    np.testing.assert_allclose(env.unwrapped.model.dof_damping, default.dof_damping * tasks[0]["model.dof_damping"])
    assert env.unwrapped.model.body_subtreemass[0] == pytest.approx(env.unwrapped.model.body_mass.sum())  # mj_setConst
    msr.check_task_family(family, n_tasks=2, steps=10)


# -- reuse of environments between rollouts --------------------------------------------------------------------


def test_reused_envs_behave_like_fresh_ones_for_new_tasks():
    family = msr.GymTaskFamily("CartPole-v1", CARTPOLE, max_episode_steps=30)
    first, second = family.sample_tasks(3, _rng(0)), family.sample_tasks(3, _rng(1))
    venv = family.make_vector_env(first, 2)
    venv.reset(seed=0)
    venv.step(np.ones(6, dtype=np.int64))
    envs = list(venv.envs)
    venv.close()
    assert len(family._pool) == 6 and not any(env.unwrapped.state is None for env in envs)  # kept, not closed
    venv = family.make_vector_env(second, 2)
    assert {id(e) for e in venv.envs} == {id(e) for e in envs}  # the same envs, now bound to the new tasks
    singles = [family.make_env(second[i // 2]) for i in range(6)]
    _compare_vector_with_singles(family, "cartpole", venv, singles, seed=7, steps=30, episodes=2)
    venv.close()
    family.close()
    assert family._pool == []


def test_derived_constants_follow_the_task_on_reuse():
    family = msr.make_task_family("CartPoleRandParams-v0")
    tasks = family.sample_tasks(2, _rng())
    venv = family.make_vector_env(tasks[:1], 1)
    venv.close()
    venv = family.make_vector_env(tasks[1:], 1)
    cartpole = venv.envs[0].unwrapped
    assert cartpole.polemass_length == pytest.approx(tasks[1]["masspole"] * tasks[1]["length"])
    assert cartpole.total_mass == pytest.approx(tasks[1]["masspole"] + tasks[1]["masscart"])
    venv.close()


# -- built-in classic-control families -------------------------------------------------------------------------


@pytest.mark.parametrize("family_id", ["CartPoleRandParams-v0", "PendulumRandParams-v0",
                                       "MountainCarContinuousRandParams-v0"])
def test_classic_control_families_pass_the_check(family_id):
    msr.check_task_family(msr.make_task_family(family_id))


def test_pendulum_tasks_change_the_physics():
    family = msr.make_task_family("PendulumRandParams-v0")
    heavy, light = {"m": 2.0, "l": 1.0, "g": 10.0}, {"m": 0.5, "l": 1.0, "g": 10.0}
    angles = []
    for task in (heavy, light):
        env = family.make_env(task)
        env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(np.array([2.0], dtype=np.float32))
        angles.append(math.atan2(obs[1], obs[0]))
    assert abs(angles[1] - angles[0]) > 0.05  # the same torque turns the light pendulum further


# -- meta-training, configs and checkpoints --------------------------------------------------------------------


def test_meta_training_on_a_yaml_declared_family_saves_and_loads(tmp_path):
    model = msr.MetaSGD("GymEnv-v0", family_kwargs=dict(env_id="CartPole-v1", parameters=CARTPOLE,
                                                         max_episode_steps=20),
                        policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2, episodes_per_task=3,
                        outer="adam", seed=0)
    assert isinstance(model.policy, msr.CategoricalMLPPolicy)
    before = {k: v.clone() for k, v in model.policy.adaptable_parameters().items()}
    model.learn(2, progress_bar=False)
    after = model.policy.adaptable_parameters()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    json.dumps(model.config)  # the distributions were stored in their dict form
    path = model.save(tmp_path / "m.pt")
    loaded = msr.MetaSGD.load(path)
    assert loaded.family.parameters == model.family.parameters
    for k, v in loaded.policy.adaptable_parameters().items():
        torch.testing.assert_close(v, after[k])
