"""MuJoCo locomotion families: the contract, the rewards the tasks claim, pooled envs, optional MuJoCo."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import metasgd_rl as msr
from metasgd_rl.checks import _compare_vector_with_singles

HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
needs_mujoco = pytest.mark.skipif(not HAS_MUJOCO, reason='needs MuJoCo: pip install "metasgd-rl[mujoco]"')

#: id -> (default horizon, disjoint splits)
FAMILIES = {
    "HalfCheetahVel-v0": (200, True),
    "HalfCheetahDir-v0": (200, False),
    "AntDir-v0": (200, False),
    "AntGoal-v0": (100, True),
    "HopperRandParams-v0": (200, True),
    "Walker2dRandParams-v0": (200, True),
}
RAND_PARAMS = ("model.body_mass", "model.body_inertia", "model.dof_damping", "model.geom_friction")
HORIZON = 10


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    """MuJoCo's default warning handler writes MUJOCO_LOG.TXT into the working directory."""
    monkeypatch.chdir(tmp_path)


def _family(family_id: str, horizon: int = HORIZON) -> msr.GymTaskFamily:
    return msr.make_task_family(family_id, max_episode_steps=horizon)


def _actions(env: gym.Env, n: int, seed: int = 0) -> list[np.ndarray]:
    space = env.action_space
    rng = np.random.default_rng(seed)
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


def _run(family: msr.GymTaskFamily, task: dict, actions: list[np.ndarray], seed: int = 0) -> list[tuple]:
    """(obs, reward, info) of each step of a fresh ``make_env(task)`` reset with ``seed``."""
    env = family.make_env(task)
    try:
        env.reset(seed=seed)
        return [(obs, reward, info) for obs, reward, _, _, info in (env.step(a) for a in actions)]
    finally:
        env.close()


def _squared_norm(action: np.ndarray) -> float:
    return float(np.sum(np.square(action.astype(np.float64))))


# ---------------------------------------------------------------------------------------------------------
# the contract


@needs_mujoco
@pytest.mark.parametrize("family_id", FAMILIES)
def test_family_passes_the_check(family_id):
    msr.check_task_family(_family(family_id), steps=HORIZON + 2)  # past the horizon: frozen sub-envs too


@needs_mujoco
def test_default_horizons_and_declared_splits():
    for family_id, (horizon, disjoint) in FAMILIES.items():
        family = msr.make_task_family(family_id)
        assert (family.max_episode_steps, family.disjoint_splits) == (horizon, disjoint), family_id
        assert family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0]).spec.max_episode_steps == horizon
    assert msr.TaskFamily.disjoint_splits is True  # the default for every other family


@needs_mujoco
@pytest.mark.parametrize("family_id", ["HalfCheetahDir-v0", "AntDir-v0"])
def test_direction_families_draw_both_directions_in_both_splits(family_id):
    family = _family(family_id)
    for split in ("train", "test"):
        directions = [t["direction"] for t in family.sample_tasks(200, np.random.default_rng(0), split=split)]
        assert set(directions) == {-1.0, 1.0} and abs(np.mean(directions)) < 0.2


# ---------------------------------------------------------------------------------------------------------
# the rewards the tasks claim


@needs_mujoco
def test_half_cheetah_vel_reward_is_minus_velocity_error_minus_control_cost():
    family = _family("HalfCheetahVel-v0")
    goals = np.linspace(0.0, 2.0, 21)
    tasks = family.sample_tasks(500, np.random.default_rng(0))
    velocities = np.array([t["goal_velocity"] for t in tasks])
    assert velocities.min() >= 0.0 and velocities.max() <= 2.0 and abs(velocities.mean() - 1.0) < 0.1

    env = family.make_env({"goal_velocity": 1.0})
    env.reset(seed=0)
    for action in _actions(env, 8):
        x_before = float(env.unwrapped.data.qpos[0])
        _, reward, _, _, info = env.step(action)
        velocity = (float(env.unwrapped.data.qpos[0]) - x_before) / env.unwrapped.dt
        assert info["x_velocity"] == pytest.approx(velocity, abs=1e-9)
        assert reward == pytest.approx(-abs(velocity - 1.0) - 0.05 * _squared_norm(action), abs=1e-9)
        assert reward == pytest.approx(info["reward_forward"] + info["reward_ctrl"], abs=1e-12)

    # the same episode under 21 goals: the velocities do not depend on the goal, and at every step the best
    # goal is the one nearest the velocity, where the reward is the control cost alone
    actions = _actions(env, 8, seed=1)
    runs = [_run(family, {"goal_velocity": float(g)}, actions) for g in goals]
    velocity = np.array([info["x_velocity"] for _, _, info in runs[0]])
    rewards = np.array([[reward for _, reward, _ in run] for run in runs])  # [goal, step]
    for run in runs[1:]:
        np.testing.assert_array_equal([info["x_velocity"] for _, _, info in run], velocity)
    np.testing.assert_array_equal(goals[rewards.argmax(axis=0)], goals[np.abs(goals[:, None] - velocity).argmin(0)])
    peak = [_run(family, {"goal_velocity": float(v)}, actions)[t][1] for t, v in enumerate(velocity)]
    np.testing.assert_allclose(peak, [-0.05 * _squared_norm(a) for a in actions], atol=1e-12)
    assert np.all(np.array(peak) >= rewards.max(axis=0))


@needs_mujoco
def test_half_cheetah_dir_reward_flips_sign_with_direction():
    family = _family("HalfCheetahDir-v0")
    actions = _actions(family.make_env({"direction": 1.0}), 8)
    forward = _run(family, {"direction": 1.0}, actions)
    backward = _run(family, {"direction": -1.0}, actions)
    for action, (obs_f, r_f, info_f), (obs_b, r_b, _) in zip(actions, forward, backward, strict=True):
        np.testing.assert_array_equal(obs_f, obs_b)  # the direction changes the reward only
        ctrl = 0.05 * _squared_norm(action)
        assert r_f == pytest.approx(info_f["x_velocity"] - ctrl, abs=1e-9)
        assert r_b == pytest.approx(-info_f["x_velocity"] - ctrl, abs=1e-9)


@needs_mujoco
def test_ant_dir_reward_is_direction_times_velocity_plus_the_envs_own_terms():
    family = _family("AntDir-v0")
    actions = _actions(family.make_env({"direction": 1.0}), 8)
    forward = _run(family, {"direction": 1.0}, actions)
    backward = _run(family, {"direction": -1.0}, actions)
    for action, (_, r_f, info), (_, r_b, _) in zip(actions, forward, backward, strict=True):
        rest = info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        assert r_f == pytest.approx(info["x_velocity"] + rest, abs=1e-9)
        assert r_b == pytest.approx(-info["x_velocity"] + rest, abs=1e-9)
        assert info["reward_survive"] == 1.0  # Ant-v5's defaults, as MAML's and ProMP's ant direction envs
        assert info["reward_ctrl"] == pytest.approx(-0.5 * _squared_norm(action), rel=1e-6)


@needs_mujoco
def test_ant_goal_reward_is_minus_l1_distance_of_the_torso_plus_the_envs_own_terms():
    family = _family("AntGoal-v0")
    goal = [1.5, -2.0]
    env = family.make_env({"goal": goal})
    assert env.observation_space.shape == (107,)  # Ant-v5's 105 plus the torso's x, y
    obs, _ = env.reset(seed=0)
    for action in _actions(env, 8):
        obs, reward, terminated, _, info = env.step(action)
        np.testing.assert_array_equal(obs[:2], env.unwrapped.data.qpos[:2])  # the agent sees where it is
        distance = abs(obs[0] - goal[0]) + abs(obs[1] - goal[1])
        rest = info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        assert reward == pytest.approx(-distance + rest, abs=1e-9)
        # ProMP's and PEARL's ant-goal weights: no healthy reward, control cost 0.1 ||a||^2
        assert info["reward_survive"] == 0.0 and not terminated
        assert info["reward_ctrl"] == pytest.approx(-0.1 * _squared_norm(action), rel=1e-6)


@needs_mujoco
def test_ant_goals_are_uniform_in_the_disc_of_radius_3():
    family = _family("AntGoal-v0")
    train = np.array([t["goal"] for t in family.sample_tasks(4000, np.random.default_rng(0))])
    radius = np.hypot(train[:, 0], train[:, 1])
    assert radius.max() <= 3.0 and radius.max() > 2.95
    assert abs(np.mean(radius < 1.5) - 0.25) < 0.03  # uniform in area: P(r < R/2) = 1/4
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=0.1)
    assert family.sample_tasks(4000, np.random.default_rng(0)) == [{"goal": g} for g in train.tolist()]
    test = family.sample_tasks(50, np.random.default_rng(0), split="test")
    assert not {tuple(t["goal"]) for t in test} & {tuple(g) for g in train[:50].tolist()}


@needs_mujoco
@pytest.mark.parametrize("family_id", ["HopperRandParams-v0", "Walker2dRandParams-v0"])
def test_rand_params_scale_the_model_and_change_the_dynamics(family_id):
    family = _family(family_id)
    default_env = gym.make(family.env_id)
    defaults = default_env.unwrapped.model
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    for task in tasks:
        model = family.make_env(task).unwrapped.model
        for path in RAND_PARAMS:
            name = path.split(".")[1]
            factors = np.asarray(task[path])
            base = 1.3 if name == "dof_damping" else 1.5  # ProMP's rand_param_envs
            assert factors.shape == getattr(defaults, name).shape
            assert factors.min() >= base**-3 and factors.max() <= base**3
            np.testing.assert_allclose(getattr(model, name), getattr(defaults, name) * factors, rtol=1e-12)
        assert model.body_mass[0] == 0.0  # the world body stays massless
        assert model.body_subtreemass[0] == pytest.approx(model.body_mass.sum())  # mj_setConst ran
    default_env.close()
    actions = _actions(family.make_env(tasks[0]), 10)
    first, second = (np.array([obs for obs, _, _ in _run(family, task, actions)]) for task in tasks)
    assert not np.allclose(first, second, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# pooled envs


@needs_mujoco
@pytest.mark.parametrize("family_id", FAMILIES)
def test_reused_envs_behave_like_fresh_ones(family_id):
    family = msr.make_task_family(family_id, max_episode_steps=HORIZON, simulator="gymnasium")
    episodes, seed = 2, 3
    rng = np.random.default_rng(seed)
    first = family.make_vector_env(family.sample_tasks(3, rng), episodes)
    first.reset(seed=seed)
    first.step(np.stack([first.single_action_space.high] * first.num_envs))  # leave some state behind
    first_envs = list(first.envs)
    first.close()  # back to the pool

    tasks = family.sample_tasks(2, rng)
    venv = family.make_vector_env(tasks, episodes)
    fresh = [family.make_env(tasks[i // episodes]) for i in range(venv.num_envs)]
    try:
        assert all(any(env is old for old in first_envs) for env in venv.envs)  # all from the pool
        _compare_vector_with_singles(family, family_id, venv, fresh, seed, HORIZON + 2, episodes)
    finally:
        venv.close()
        family.close()
        for env in fresh:
            env.close()


# ---------------------------------------------------------------------------------------------------------
# MuJoCo: optional, and quiet


def test_without_mujoco_the_module_imports_and_building_a_family_says_what_to_install():
    code = (
        "import sys\n"
        "sys.modules['mujoco'] = None  # as if MuJoCo were not installed\n"
        "import metasgd_rl_envs.locomotion, metasgd_rl as msr\n"
        "assert 'HalfCheetahVel-v0' in msr.list_task_families()\n"
        "try:\n"
        "    msr.make_task_family('HalfCheetahVel-v0')\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'pip install "metasgd-rl[mujoco]"' in result.stdout
    assert result.stdout.startswith("HalfCheetahVelFamily: ")


def test_gymnasiums_missing_dependency_error_becomes_ours(monkeypatch):
    from metasgd_rl_envs.locomotion import HopperRandParamsFamily

    def make(*args, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')

    monkeypatch.setattr(gym, "make", make)
    # works without MuJoCo
    monkeypatch.setattr("metasgd_rl_envs.locomotion.quiet_mujoco_compiler", contextlib.nullcontext)
    with pytest.raises(ImportError, match=r'^HopperRandParamsFamily: .*pip install "metasgd-rl\[mujoco\]"') as info:
        HopperRandParamsFamily()
    assert isinstance(info.value.__cause__, gym.error.DependencyNotInstalled)


@needs_mujoco
def test_the_settotalmass_warning_is_silenced_and_other_warnings_are_forwarded(capfd):
    import mujoco

    from metasgd_rl_envs.locomotion import quiet_mujoco_compiler

    gym.make("HalfCheetah-v5").close()  # unfiltered: MuJoCo 4 prints it (3.3, metaworld's pin, does not)
    assert ("settotalmass" in capfd.readouterr().err) == (int(mujoco.__version__.split(".")[0]) >= 4)

    family = msr.make_task_family("HalfCheetahVel-v0", max_episode_steps=HORIZON, simulator="gymnasium")
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    family.make_env(tasks[0]).close()
    family.make_vector_env(tasks, 3).close()
    assert len(family._pool) == 6
    assert "settotalmass" not in capfd.readouterr().err

    assert mujoco.get_mju_user_warning() is None  # restored
    with quiet_mujoco_compiler():
        handler = mujoco.get_mju_user_warning()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            handler("compiler attribute 'settotalmass' is deprecated and will be removed")  # dropped
        with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
            handler("something else")
    assert mujoco.get_mju_user_warning() is None


# ---------------------------------------------------------------------------------------------------------
# meta-training


@needs_mujoco
def test_meta_training_smoke_run():
    family = msr.make_task_family("HalfCheetahVel-v0", max_episode_steps=10)
    model = msr.MetaSGD(family, meta_batch_size=2, episodes_per_task=2, policy_kwargs=dict(hidden_sizes=(8,)),
                        outer="adam", seed=0)
    before = [p.detach().clone() for p in (*model.policy.parameters(), *model.step_sizes.parameters())]
    model.learn(2, progress_bar=False)
    after = [p.detach() for p in (*model.policy.parameters(), *model.step_sizes.parameters())]
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert math.isfinite(float(sum(p.sum() for p in after)))
