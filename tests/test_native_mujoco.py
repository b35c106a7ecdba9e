"""The locomotion families on MuJoCo's batched rollout (``simulator="native"``) against gymnasium's envs.

What is compared, bit for bit: resets (the same seeding rule, the same draws), every step taken from the same
physics state with the same action (observation, reward, every ``info`` term, terminated, truncated), and whole
episodes when the constraint solver's warm start is off in both (the one thing ``mujoco.rollout`` does not carry
between calls; see :mod:`metasgd_rl.native_mujoco`). With it on, episode returns agree in distribution.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import metasgd_rl as msr
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.run import Run
from metasgd_rl.sampler import sample_episodes
from metasgd_rl.threads import torch_threads
from tests.test_run import Crash, assert_same_run, crash_after
from tests.tiny_config import TINY

HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
pytestmark = pytest.mark.skipif(not HAS_MUJOCO, reason='needs MuJoCo: pip install "metasgd-rl[mujoco]"')

NATIVE = ("HalfCheetahVel-v0", "HalfCheetahDir-v0", "HopperRandParams-v0", "Walker2dRandParams-v0")
TASKS, EPISODES, SEED = 3, 2, 11


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    """MuJoCo's default warning handler writes MUJOCO_LOG.TXT into the working directory."""
    monkeypatch.chdir(tmp_path)


def _pair(family_id: str, horizon: int):
    """The family on both simulators, the same tasks, the native vector env and one gymnasium env per sub-env."""
    native = msr.make_task_family(family_id, max_episode_steps=horizon)
    gym_family = msr.make_task_family(family_id, max_episode_steps=horizon, simulator="gymnasium")
    assert native.simulator == "native" and gym_family.simulator == "gymnasium"
    tasks = native.sample_tasks(TASKS, np.random.default_rng(0))
    venv = native.make_vector_env(tasks, EPISODES)
    envs = [gym_family.make_env(tasks[i // EPISODES]) for i in range(venv.num_envs)]
    return native, venv, envs


def _actions(venv, steps: int, scale: float) -> list[np.ndarray]:
    """float32 actions, as the sampler gives them (``scale`` > 1 leaves the control range: MuJoCo clamps)."""
    rng = np.random.default_rng(1)
    shape = (venv.num_envs, venv.single_action_space.shape[0])
    return [(scale * rng.uniform(-1, 1, shape)).astype(np.float32) for _ in range(steps)]


def _set_physics(env, state: np.ndarray) -> None:
    """Put a gymnasium env into a native sub-env's physics state (warm start as the native env has it: zero)."""
    import mujoco

    base = env.unwrapped
    mujoco.mj_setState(base.model, base.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS.value)
    base.data.qacc_warmstart[:] = 0


def _assert_step_equal(i: int, t: int, native_step: tuple, gym_step: tuple) -> None:
    obs, reward, terminated, truncated, info = native_step
    g_obs, g_reward, g_terminated, g_truncated, g_info = gym_step
    where = f"sub-env {i}, step {t}"
    assert np.array_equal(obs[i], g_obs), where
    assert reward[i] == g_reward, (where, reward[i], g_reward)
    assert (terminated[i], truncated[i]) == (g_terminated, g_truncated), where
    assert {k for k in info if not k.startswith("_")} == set(g_info), where
    for key, value in g_info.items():
        assert info["_" + key][i] and info[key][i] == value, (where, key, info[key][i], value)


@pytest.mark.parametrize("family_id", NATIVE)
def test_reset_draws_the_gymnasium_envs_initial_states_with_the_same_seeding_rule(family_id):
    _, venv, envs = _pair(family_id, 5)
    obs, info = venv.reset(seed=SEED)
    for i, env in enumerate(envs):
        g_obs, g_info = env.reset(seed=SEED + i)
        assert np.array_equal(obs[i], g_obs)
        assert all(info[k][i] == v for k, v in g_info.items())
    again, _ = venv.reset(seed=SEED)
    assert np.array_equal(again, obs)  # same seed, same episodes
    other, _ = venv.reset(seed=SEED + 100)
    assert not np.array_equal(other, obs)
    # no seed: each sub-env keeps drawing from its own generator, as a gymnasium env does
    venv.reset(seed=SEED)
    unseeded, _ = venv.reset()
    for i, env in enumerate(envs):
        env.reset(seed=SEED + i)
        assert np.array_equal(unseeded[i], env.reset()[0])


@pytest.mark.parametrize("family_id", NATIVE)
def test_every_step_from_the_same_state_equals_gymnasiums_bit_for_bit(family_id):
    """Obs, reward, every info term and both flags, through terminations and the time limit."""
    horizon = 40
    _, venv, envs = _pair(family_id, horizon)
    venv.reset(seed=SEED)
    for i, env in enumerate(envs):
        env.reset(seed=SEED + i)
    done = np.zeros(venv.num_envs, dtype=bool)
    saw_termination = False
    for t, actions in enumerate(_actions(venv, horizon + 2, scale=1.5), start=1):
        states = venv.state.copy()
        step = venv.step(actions)
        for i, env in enumerate(envs):
            if done[i]:  # frozen: last observation, reward 0, sticky flags, no info
                assert step[1][i] == 0.0 and (step[2][i] or step[3][i]) and not step[4].get("_x_position", ~done)[i]
                continue
            _set_physics(env, states[i])
            _assert_step_equal(i, t, step, env.step(actions[i]))
        saw_termination |= bool(step[2].any())
        done |= step[2] | step[3]
    assert done.all()
    assert step[3].any() or saw_termination
    if family_id.startswith(("Hopper", "Walker")):
        assert saw_termination  # falling ends an episode, as in gymnasium


@pytest.mark.parametrize("family_id", NATIVE)
def test_whole_episodes_equal_gymnasiums_when_the_solver_warm_start_is_off_in_both(family_id):
    import mujoco

    horizon = 60
    native, venv, envs = _pair(family_id, horizon)
    off = mujoco.mjtDisableBit.mjDSBL_WARMSTART.value
    for model in {id(m): m for m in venv.models}.values():
        model.opt.disableflags |= off
    for env in envs:
        env.unwrapped.model.opt.disableflags |= off
    venv.reset(seed=SEED)
    for i, env in enumerate(envs):
        env.reset(seed=SEED + i)
    done = np.zeros(venv.num_envs, dtype=bool)
    for t, actions in enumerate(_actions(venv, horizon, scale=0.5), start=1):
        step = venv.step(actions)
        for i, env in enumerate(envs):
            if not done[i]:
                _assert_step_equal(i, t, step, env.step(actions[i]))
        done |= step[2] | step[3]
    assert done.all()


def test_with_the_warm_start_episode_returns_agree_in_distribution():
    """MuJoCo's solver warm start differs (see the module docstring): single trajectories drift apart after tens
    of steps, but the physics is the same: mean returns of a random policy agree within noise."""
    horizon, tasks, episodes = 50, 4, 25
    returns = {}
    for simulator in ("native", "gymnasium"):
        family = msr.make_task_family("HalfCheetahVel-v0", max_episode_steps=horizon, simulator=simulator)
        venv = family.make_vector_env(family.sample_tasks(tasks, np.random.default_rng(0)), episodes)
        venv.reset(seed=SEED)
        total = np.zeros(venv.num_envs)
        for actions in _actions(venv, horizon, scale=1.0):
            total += venv.step(actions)[1]
        returns[simulator] = total
        venv.close()
        family.close()
    diff = returns["native"] - returns["gymnasium"]
    assert not np.array_equal(returns["native"], returns["gymnasium"])  # the warm start does change trajectories
    assert abs(diff.mean()) < 3 * diff.std(ddof=1) / np.sqrt(len(diff)) + 1e-9
    assert abs(diff.mean()) < 0.02 * abs(returns["gymnasium"].mean())


@pytest.mark.parametrize("family_id", ["HalfCheetahDir-v0", "HopperRandParams-v0"])
def test_the_thread_count_does_not_change_a_bit(family_id):
    family = msr.make_task_family(family_id, max_episode_steps=30)
    policy = msr.make_policy(family.observation_space, family.action_space, hidden_sizes=(16,),
                             generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    batches = []
    for threads in (1, 2):
        with torch_threads(threads):
            venv = family.make_vector_env(tasks, 3)
            assert venv.threads == threads
            venv.close()
            batches.append(sample_episodes(family, policy, policy.task_parameters(4), tasks, 3, seed=5))
    one, two = batches
    for name in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name


def test_memory_is_one_model_per_distinct_task_and_no_gymnasium_env_per_sub_env():
    vel = msr.make_task_family("HalfCheetahVel-v0", max_episode_steps=5)
    venv = vel.make_vector_env(vel.sample_tasks(4, np.random.default_rng(0)), 5)
    assert len({id(m) for m in venv.models}) == 1  # the reward is the task: one model for all 20 sub-envs
    venv.close()
    hopper = msr.make_task_family("HopperRandParams-v0", max_episode_steps=5)
    tasks = hopper.sample_tasks(4, np.random.default_rng(0))
    with torch_threads(2):
        venv = hopper.make_vector_env(tasks, 5)
    assert len({id(m) for m in venv.models}) == 4  # one per task, shared by its 5 episodes
    assert all(venv.models[i] is venv.models[5 * (i // 5)] for i in range(20))
    venv.reset(seed=0)
    venv.step(np.zeros((20, venv.nu), dtype=np.float32))
    assert [len(datas) for _, datas in venv._pools.values()] == [2]  # one MjData per thread
    assert hopper._pool == [] and vel._pool == []  # no gymnasium envs were built for sub-envs
    factors = np.asarray(tasks[1]["model.body_mass"])
    base = hopper._native_env_source().unwrapped.model
    np.testing.assert_array_equal(venv.models[5].body_mass, base.body_mass * factors)
    assert venv.models[5].body_subtreemass[0] == pytest.approx(venv.models[5].body_mass.sum())  # mj_setConst ran
    venv.close()


def test_the_ant_families_stay_on_gymnasium_and_refuse_native_in_one_line():
    for family_id in ("AntDir-v0", "AntGoal-v0"):
        assert msr.make_task_family(family_id, max_episode_steps=5).simulator == "gymnasium"
        with pytest.raises(ValueError, match=r"simulator='native' cannot serve Ant-v5: .*cfrc_ext.*"
                                             r"use simulator='gymnasium'"):
            msr.make_task_family(family_id, simulator="native")


def test_a_bad_simulator_is_refused_by_the_family_and_by_the_config():
    with pytest.raises(ValueError, match=r"simulator='mjx' is not allowed; use one of \['native', 'gymnasium'\]"):
        msr.make_task_family("HalfCheetahVel-v0", simulator="mjx")
    with pytest.raises(ConfigError, match="simulator"):
        resolve_config({**TINY, "family": "AntDir-v0", "family_kwargs": {"simulator": "native"}})


def test_a_mujoco_without_the_batched_rollout_is_one_clear_error(monkeypatch):
    import mujoco

    monkeypatch.setattr(mujoco, "__version__", "3.2.6")
    with pytest.raises(ValueError, match=r"MuJoCo 3\.2\.6 has no mujoco\.rollout\.Rollout .*>= 3\.2\.7.*"
                                         r"or use simulator='gymnasium'"):
        msr.make_task_family("HalfCheetahVel-v0")
    assert msr.make_task_family("HalfCheetahVel-v0", simulator="gymnasium").simulator == "gymnasium"


def test_without_mujoco_the_native_families_keep_the_install_hint():
    code = (
        "import sys; sys.modules['mujoco'] = None\n"
        "import metasgd_rl as msr\n"
        "try:\n    msr.make_task_family('HalfCheetahVel-v0')\n"
        "except ImportError as err:\n    print('ImportError', err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ImportError") and 'pip install "metasgd-rl[mujoco]"' in out


def test_check_task_family_passes_on_the_native_envs():
    for family_id in NATIVE:
        report = msr.check_task_family(msr.make_task_family(family_id, max_episode_steps=12), steps=14)
        assert "make_vector_env" in str(report)


def test_meta_gradients_through_native_rollouts_equal_those_through_gymnasiums_envs():
    """Second order, θ and α: the estimator gets the same episodes (these 10 steps are within the stretch where
    the solver's warm start has not yet changed a trajectory by more than rounding) and so the same gradient."""
    grads = {}
    for simulator in ("native", "gymnasium"):
        model = msr.MetaSGD("HalfCheetahVel-v0", family_kwargs={"max_episode_steps": 10, "simulator": simulator},
                            policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2, episodes_per_task=3,
                            estimator="lvc", seed=3)
        model.meta_loss(model.sample_train_tasks(0)).backward()
        grads[simulator] = [p.grad.clone() for p in (*model.policy.parameters(), *model.step_sizes.parameters())]
    assert len(grads["native"]) == len(grads["gymnasium"]) > 0
    for native, gym_grad in zip(grads["native"], grads["gymnasium"], strict=True):
        assert native.abs().sum() > 0
        torch.testing.assert_close(native, gym_grad, rtol=1e-5, atol=1e-7)


def test_resume_after_a_crash_equals_the_uninterrupted_run_on_native_rollouts(tmp_path):
    config = {**TINY, "family": "HopperRandParams-v0", "family_kwargs": {"max_episode_steps": 8},
              "outer": "trpo", "outer_kwargs": None}
    a, b = tmp_path / "a", tmp_path / "b"
    Run.create(resolve_config({**config, "run_dir": str(a)})).train()
    run = Run.create(resolve_config({**config, "run_dir": str(b)}))
    with pytest.raises(Crash):
        run.train(callback=crash_after(3))
    Run.resume(b).train()
    assert_same_run(a, b)


def test_a_new_family_records_its_simulator_so_a_later_default_cannot_change_a_saved_run(tmp_path):
    assert msr.make_task_family("HalfCheetahDir-v0").make_kwargs == {"simulator": "native"}
    assert msr.make_task_family("AntDir-v0").make_kwargs == {"simulator": "gymnasium"}
    config = resolve_config({**TINY, "family": "HalfCheetahVel-v0", "family_kwargs": {"max_episode_steps": 5}})
    assert config["family_kwargs"] == {"simulator": "native", "max_episode_steps": 5}
    model = msr.MetaSGD("HalfCheetahVel-v0", family_kwargs={"max_episode_steps": 5},
                        policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1)
    model.save(tmp_path / "m.pt")
    assert msr.MetaSGD.load(tmp_path / "m.pt").family.simulator == "native"


def test_runs_and_checkpoints_from_before_the_native_simulator_resume_and_load_on_gymnasium(tmp_path):
    """They were trained on gymnasium's envs: resuming or evaluating them there keeps their numbers."""
    config = {**TINY, "family": "HalfCheetahVel-v0", "family_kwargs": {"max_episode_steps": 5}, "iterations": 2}
    run_dir = tmp_path / "old"
    Run.create(resolve_config({**config, "run_dir": str(run_dir)})).train()
    config_file = run_dir / "config.yaml"
    text = config_file.read_text()
    assert "simulator: native" in text
    config_file.write_text(text.replace("  simulator: native\n", ""))  # as a run from before wrote it
    for name in ("checkpoint.pt", "final.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        saved = json.loads(state["config"])
        del saved["family_kwargs"]["simulator"]
        state["config"] = json.dumps(saved)
        del state["digest"]  # such files had no digest either
        torch.save(state, run_dir / name)
    assert msr.MetaSGD.load(run_dir / "final.pt").family.simulator == "gymnasium"
    resumed = Run.resume(run_dir, sets=["iterations=3"])
    assert resumed.model.family.simulator == "gymnasium"


def test_bad_inputs_are_refused_before_anything_is_stepped():
    family = msr.make_task_family("HalfCheetahVel-v0", max_episode_steps=5)
    with pytest.raises(ValueError, match="must be finite numbers"):
        family.make_vector_env([{"goal_velocity": float("nan")}], 2)
    with pytest.raises(ValueError, match="episodes_per_task must be >= 1"):
        family.make_vector_env(family.sample_tasks(1, np.random.default_rng(0)), 0)
    venv = family.make_vector_env(family.sample_tasks(2, np.random.default_rng(0)), 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions of shape \(4, 5\) for 4 sub-envs with 6 actuators"):
        venv.step(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="got 3 seeds for 4 sub-envs"):
        venv.reset(seed=[0, 1, 2])
    obs, _ = venv.reset(seed=[7, 8, 9, 10])  # one seed per sub-env, as gymnasium's vector envs take them
    again, _ = venv.reset(seed=7)
    assert np.array_equal(obs, again)
    venv.close()
