"""Issue 14: what a user feeds the library (a family's tasks, envs and observations, an unknown id, a loaded
machine under Ray) ends in a clear one-line error or warning that says where and what to do, never in a traceback
from deep inside or a silent wrong result."""

from __future__ import annotations

import copy
import pickle
import re
import uuid
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import metasgd_rl as msr
from metasgd_rl import ray_sampler, registry
from metasgd_rl.cli import main
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.family import TaskFamily, TaskFamilyError, check_split
from metasgd_rl.policies import make_policy
from metasgd_rl.ray_sampler import RolloutWorker, RolloutWorkerError, startup_timeout_message
from metasgd_rl.sampler import sample_episodes
from metasgd_rl_envs.navigation import Navigation2DFamily
from tests.tiny_config import TINY, write_config

TINY_MODEL = dict(policy_kwargs=dict(hidden_sizes=[16]), meta_batch_size=2, episodes_per_task=2, outer="adam",
                  outer_kwargs=dict(lr=0.01), seed=0)


@pytest.fixture
def new_id():
    """Hands out unique family ids and removes whatever a test registered under them."""
    added: list[str] = []

    def make() -> str:
        added.append(f"Robust{uuid.uuid4().hex[:8]}-v0")
        return added[-1]

    yield make
    for family_id in added:
        registry._REGISTRY.pop(family_id, None)


class GenericNavigation(Navigation2DFamily):
    """Navigation2D stepped through the generic vector env (one ``make_env`` per sub-env)."""

    make_vector_env = TaskFamily.make_vector_env

    def __init__(self, max_episode_steps: int = 10):
        super().__init__(max_episode_steps)


# -- 1. tasks that are not JSON-able ---------------------------------------------------------------------------


class _Opaque:
    pass


NOT_JSON = {
    "numpy-array": (lambda goal: np.asarray(goal), "'goal' is a numpy.ndarray: convert numpy arrays with .tolist()"),
    "numpy-scalar": (lambda goal: {"x": np.float32(goal[0])}, "'goal.x' is a numpy.float32: convert numpy scalars"),
    "tuple": (lambda goal: tuple(goal), "'goal' is a tuple: use a list instead of a tuple"),
    "set": (lambda goal: {round(g, 3) for g in goal}, "'goal' is a set: use a sorted list instead of a set"),
    "object": (lambda goal: [goal[0], _Opaque()], "'goal[1]' is a tests.test_robustness._Opaque"),
    "int-key": (lambda goal: {0: goal[0]}, "key 0 of 'goal' is a int: use string keys"),
}


class NotJsonTasks(GenericNavigation):
    convert = staticmethod(lambda goal: goal)

    def sample_tasks(self, n, rng, split="train"):
        return [{"goal": type(self).convert(task["goal"])} for task in super().sample_tasks(n, rng, split)]


def not_json_family(kind: str) -> type:
    return type(f"NotJson_{kind.replace('-', '_')}", (NotJsonTasks,), {"convert": staticmethod(NOT_JSON[kind][0])})


@pytest.mark.parametrize("kind", list(NOT_JSON))
def test_a_task_that_is_not_json_able_is_refused_at_the_first_sample_naming_family_key_and_type(kind):
    model = msr.MetaSGD(not_json_family(kind)(), **TINY_MODEL)
    with pytest.raises(TaskFamilyError) as info:
        model.train_step()
    message = str(info.value)
    assert message.startswith(f"task family NotJson_{kind.replace('-', '_')}: sample_tasks(split='train') returned a "
                              "task that is not JSON-able (task 0: ")
    assert NOT_JSON[kind][1] in message
    assert "tasks must be JSON-able dicts" in message and "\n" not in message
    assert model.iteration == 0


def test_a_run_of_a_family_with_numpy_tasks_is_refused_before_its_directory_is_written(new_id, tmp_path, capsys):
    family_id = new_id()
    msr.register_task_family(family_id, entry_point=not_json_family("numpy-array"))
    run_dir = tmp_path / "run"
    code = main(["train", str(write_config(tmp_path / "c.yaml", family=family_id)), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"family={family_id!r} cannot be used: task family {family_id!r}" in err
    assert "'goal' is a numpy.ndarray: convert numpy arrays with .tolist()" in err
    assert not run_dir.exists()


def test_check_task_family_names_the_key_and_type_of_a_task_that_is_not_json_able():
    with pytest.raises(msr.TaskFamilyCheckError, match=re.escape(
            "NotJson_set: sample_tasks(split='train') returned a task that is not JSON-able (task 0: 'goal' is a set: "
            "use a sorted list instead of a set)")):
        msr.check_task_family(not_json_family("set")())


# -- 2. make_env that raises -----------------------------------------------------------------------------------


class BadMassFamily(GenericNavigation):
    disjoint_splits = False

    def make_env(self, task):
        if task["goal"][0] > 0:
            raise ValueError("mass must be positive")
        return super().make_env(task)

    def sample_tasks(self, n, rng, split="train"):
        check_split(split)
        return [{"goal": [0.3, 0.1]}, {"goal": [-0.2, 0.2]}][:n]


def _rollout(family: TaskFamily, tasks: list, seed: int = 0):
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    return sample_episodes(family, policy, policy.task_parameters(len(tasks)), tasks, 2, seed=seed)


def test_a_make_env_that_raises_is_reported_with_the_family_and_the_task():
    family = BadMassFamily()
    family.id = "BadMass-v0"
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    with pytest.raises(TaskFamilyError) as info:
        _rollout(family, tasks)
    assert str(info.value) == ("task family 'BadMass-v0': make_env could not build an env for task {'goal': [0.3, "
                               "0.1]} (tasks[0]): ValueError: mass must be positive")
    assert isinstance(info.value.__cause__, ValueError)  # the original, chained
    with pytest.raises(msr.TaskFamilyCheckError, match=re.escape(
            "BadMass-v0: make_env({'goal': [0.3, 0.1]}) raised ValueError: mass must be positive")):
        msr.check_task_family(family, n_tasks=2)


# -- 3. observations of the wrong shape ------------------------------------------------------------------------


class ExtraCoordinate(gym.ObservationWrapper):
    """Appends a coordinate to the observation, from step ``after`` on (0: from reset), keeping or not the space."""

    def __init__(self, env, after: int, declare: bool):
        super().__init__(env)
        self.after, self.steps = after, 0
        if declare:
            self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def reset(self, **kwargs):
        self.steps = 0
        return super().reset(**kwargs)

    def step(self, action):
        self.steps += 1
        return super().step(action)

    def observation(self, obs):
        return np.append(obs, np.float32(0)) if self.steps >= self.after else obs


class WrongShape(GenericNavigation):
    after, declare = 0, False

    def make_env(self, task):
        env = super().make_env(task)
        return ExtraCoordinate(env, self.after, self.declare) if task["goal"][0] > 0 else env

    def sample_tasks(self, n, rng, split="train"):
        return [{"goal": [-0.2, 0.2]}, {"goal": [0.25, -0.25]}][:n]


@pytest.mark.parametrize(("after", "declare", "when"), [(0, False, "at reset"), (2, False, "at step 2"),
                                                         (0, True, "at reset")],
                         ids=["reset", "later-step", "declared-space"])
def test_an_observation_of_the_wrong_shape_names_family_task_and_both_shapes(after, declare, when):
    family = WrongShape()
    family.after, family.declare, family.id = after, declare, "WrongShape-v0"
    with pytest.raises(TaskFamilyError) as info:
        _rollout(family, family.sample_tasks(2, None))
    assert str(info.value) == (
        f"task family 'WrongShape-v0': the env of task 1 of the meta-batch ({{'goal': [0.25, -0.25]}}) returned an "
        f"observation of shape (3,) {when} (episode 0), but family.observation_space has shape (2,); make_env must "
        "build envs whose observations match the family's observation_space")


# -- 4. a family id unknown in this process --------------------------------------------------------------------


def test_an_unknown_id_says_it_is_not_registered_in_this_process_and_how_to_declare_it():
    with pytest.raises(KeyError) as info:
        msr.make_task_family("MyEnv-v0")
    message = str(info.value)
    assert message.startswith("task family 'MyEnv-v0' is not registered in this process: a family registered in "
                              "Python (register_task_family) exists only in a process that imported its module")
    assert '[project.entry-points."metasgd_rl.task_families"] "MyEnv-v0" = "your_package.module:YourFamily"' \
        in message
    assert "did you mean" not in message.lower()  # 'GymEnv-v0' shares only the suffix
    assert "\n" not in message


@pytest.mark.parametrize(("typo", "meant"), [("Navigation2D-v1", "'Navigation2D-v0'"),
                                             ("navigaton2d-v0", "'Navigation2D-v0'"),
                                             ("CartPole-v0", "'CartPoleRandParams-v0'")])
def test_did_you_mean_is_kept_for_close_ids(typo, meant):
    with pytest.raises(KeyError, match=f"did you mean {meant}"):
        msr.make_task_family(typo)


def test_a_config_naming_an_unregistered_family_ends_in_one_line(tmp_path, capsys):
    code = main(["train", str(write_config(tmp_path / "c.yaml", family="MyEnv-v0")), "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "error: family='MyEnv-v0' is not registered in this process: " in err
    assert "did you mean" not in err.lower()


def test_a_ray_worker_that_cannot_make_the_family_says_why_instead_of_dying():
    worker = RolloutWorker(("MyEnv-v0", {}))  # the actor's body, without Ray: a fresh process lacks the id
    assert worker.ping()[1] is None and worker.load()[1] is None  # up, and the rollout code imports
    _, error = worker.build()
    assert error.startswith("a Ray rollout actor could not make task family 'MyEnv-v0' (an actor rebuilds the family "
                            "from its id in a fresh process): UnknownTaskFamilyError: task family 'MyEnv-v0' is not "
                            "registered in this process: ")
    assert worker.ping()[1] == error
    with pytest.raises(RolloutWorkerError, match="could not make task family 'MyEnv-v0'"):
        worker.rollout(None, {}, [], 1, 0, 0, 0, 0)
    assert RolloutWorker(("Navigation2D-v0", {})).build()[1] is None
    unpicklable = pickle.dumps(("no_such_module_xyz", {}))[:-3]  # a truncated pickle, as from a broken sender
    error = RolloutWorker(unpicklable, name="MyFamily").build()[1]
    assert error.startswith("a Ray rollout actor could not make task family 'MyFamily' (an actor unpickles the family "
                            "in a fresh process): ") and "\n" not in error


def test_a_restarted_ray_worker_loads_and_builds_on_its_first_rollout():
    """Ray reruns only the constructor of a restarted actor: its first rollout makes the family itself."""
    worker = RolloutWorker(pickle.dumps(("Navigation2D-v0", {"max_episode_steps": 3})))
    family = msr.make_task_family("Navigation2D-v0", max_episode_steps=3)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(4,))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    batch = worker.rollout(policy, policy.task_parameters(2), tasks, 1, 0, 1, 0, 2)
    assert worker.family is not None and batch.observations.shape[:2] == (3, 2)  # [H, T]


# -- 5. NaN / inf in one step of one task ----------------------------------------------------------------------


class Poisoned(gym.Wrapper):
    """NaN reward or inf observation at step ``at``."""

    def __init__(self, env, what: str, at: int):
        super().__init__(env)
        self.what, self.at, self.steps = what, at, 0

    def reset(self, **kwargs):
        self.steps = 0
        return super().reset(**kwargs)

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps == self.at:
            if self.what == "reward":
                reward = float("nan")
            else:
                obs = np.array([np.inf, 0.0], dtype=np.float32)
        return obs, reward, terminated, truncated, info


class PoisonedFamily(GenericNavigation):
    """Task 1's envs return a NaN reward / inf observation at step ``at`` in the rollout number ``rollout``."""

    what, at, rollout = "reward", 3, -1  # rollout -1: none poisoned

    def __init__(self):
        super().__init__()
        self.rollouts = 0

    def sample_tasks(self, n, rng, split="train"):
        return [{"goal": [0.3, 0.2 if i == 1 else -0.2], "poisoned": i == 1} for i in range(n)]

    def make_env(self, task):
        return super().make_env({"goal": task["goal"]})

    def make_vector_env(self, tasks, episodes_per_task):
        venv = super().make_vector_env(tasks, episodes_per_task)
        if self.rollouts == self.rollout:
            for i, env in enumerate(venv.envs):
                if tasks[i // episodes_per_task]["poisoned"]:
                    venv.envs[i] = Poisoned(env, self.what, self.at)
        self.rollouts += 1
        return venv


def _state(model):
    return copy.deepcopy((model.policy.state_dict(), model.step_sizes.state_dict(),
                          model.outer_optimizer.state_dict(), model.alpha_optim.state_dict()))


@pytest.mark.parametrize(("what", "rollout", "expected"), [
    ("reward", 0,
     "got a non-finite reward (nan) at step 3 of episode 0 in the pre-adaptation rollouts of inner step 1"),
    ("observation", 1, "got a non-finite observation (inf) at step 3 of episode 0 in the post-adaptation rollouts"),
], ids=["pre-reward", "post-observation"])
def test_a_non_finite_value_in_one_task_names_the_task_the_stage_and_the_step(what, rollout, expected):
    family = PoisonedFamily()
    model = msr.MetaSGD(family, **TINY_MODEL)
    model.train_step()  # one good update, so that Adam has a state to keep
    before = _state(model)
    family.what, family.rollout, family.rollouts = what, rollout, 0  # the next iteration's rollouts: 0 pre-, 1 post-
    with pytest.warns(RuntimeWarning) as record:
        info = model.train_step()
    message = str(record[-1].message)
    assert message.startswith("iteration 2: the adam update was rejected because task 1 of the meta-batch ({'goal': "
                              "[0.3, 0.2], 'poisoned': True}) " + expected + " of task family PoisonedFamily: its env "
                              "must return finite rewards and observations; θ and α are unchanged")
    assert info["update_rejected"]
    after = _state(model)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_non_finite_value_in_an_evaluation_rollout_is_reported():
    family = PoisonedFamily()
    model = msr.MetaSGD(family, **TINY_MODEL)
    family.rollouts, family.rollout = 0, 1  # the rollout after the first inner step
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        msr.evaluate_adaptation(model, n_tasks=2, steps=1, episodes=2, split="train")
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert messages == ["evaluate_adaptation: task 1 of the evaluation tasks ({'goal': [0.3, 0.2], 'poisoned': True}) "
                        "got a non-finite reward (nan) at step 3 of episode 0 in the evaluation rollouts after 1 inner "
                        "steps of task family PoisonedFamily: its env must return finite rewards and observations; "
                        "the returns it affects are not finite"]


# -- 6. Ray's startup timeout ----------------------------------------------------------------------------------


ADVICE = "raise the timeout (config key ray_startup_timeout, or RaySampler(startup_timeout=...)) or reduce the load"


def test_actors_whose_processes_are_slow_to_start_are_told_to_raise_the_timeout():
    message = startup_timeout_message(2, 2, 1.0, 120.0, total_cpus=2.0, free_cpus=2.0)
    assert message == ("2 of 2 new Ray rollout actors (num_cpus=1 each) did not start within startup_timeout=120 s, "
                       "although Ray has the CPUs for them (2 of 2 free): the worker processes were not up after "
                       "120 s (Ray starts a Python process per actor, which imports Ray and this package's light "
                       f"worker module; slow only on a heavily loaded machine); {ADVICE}")


def test_actors_slow_to_import_torch_are_told_which_stage_was_slow():
    message = startup_timeout_message(2, 2, 1.0, 120.0, total_cpus=2.0, free_cpus=None, finished=[4.13])
    assert message == ("2 of 2 new Ray rollout actors (num_cpus=1 each) did not start within startup_timeout=120 s: "
                       "the worker processes were up after 4.1 s, but importing torch and the rollout code had not "
                       "finished after 115.9 s (on a loaded machine torch's import alone can take a minute); "
                       f"{ADVICE}")


def test_actors_slow_to_make_the_family_are_told_which_stage_was_slow():
    message = startup_timeout_message(1, 2, 1.0, 60.0, total_cpus=2.0, free_cpus=None, finished=[2.0, 12.5],
                                      family="HalfCheetahVel-v0")
    assert message == ("1 of 2 new Ray rollout actors (num_cpus=1 each) did not start within startup_timeout=60 s: "
                       "the worker processes were up after 2.0 s and imported torch and the rollout code in 10.5 s, "
                       "but making task family 'HalfCheetahVel-v0' (importing its module and building it) had not "
                       f"finished after 47.5 s; {ADVICE}")


def test_actors_that_cannot_be_placed_are_told_about_the_cpus():
    message = startup_timeout_message(1, 3, 1.0, 10.0, total_cpus=2.0, free_cpus=2.0)
    assert message.startswith("1 of 3 new Ray rollout actors (num_cpus=1 each) did not start within "
                              "startup_timeout=10 s: they need 3 CPUs but Ray has only 2 of its 2 CPUs free")
    assert message.endswith("use fewer workers (ray_workers) or free the CPUs")
    # actors that answered a ping were placed: a later stage is slow whatever Ray's free CPUs are now
    assert "CPUs free" not in startup_timeout_message(3, 3, 1.0, 10.0, total_cpus=2.0, free_cpus=None, finished=[1.0])


def test_the_startup_timeout_is_a_config_key_that_reaches_the_ray_sampler(monkeypatch):
    monkeypatch.setattr(ray_sampler, "import_ray", lambda: None)  # RaySampler starts nothing before its first rollout
    config = resolve_config({**TINY, "sampler": "ray", "ray_startup_timeout": 300, "run_dir": "unused"})
    assert config["ray_startup_timeout"] == 300
    model = msr.MetaSGD(**{k: v for k, v in config.items() if k in msr.MetaSGD(**TINY_MODEL).config})
    assert model._sample_fn.startup_timeout == 300.0
    with pytest.raises(ConfigError, match="ray_startup_timeout=0 is not allowed; use a positive number"):
        resolve_config({**TINY, "ray_startup_timeout": 0, "run_dir": "unused"})
