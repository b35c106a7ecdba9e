"""A family whose env raises, speaks the old gym API (4-tuple step, reset returning the observation alone), returns
an array reward, or whose ``sample_tasks`` raises: one TaskFamilyError line naming the family, the task and the stage
(the original exception chained), not numpy's or gymnasium's error from deep inside."""

from __future__ import annotations

import uuid

import gymnasium as gym
import numpy as np
import pytest

import metasgd_rl as msr
from metasgd_rl import registry
from metasgd_rl.cli import main
from metasgd_rl.family import TaskFamily, TaskFamilyError
from metasgd_rl.policies import make_policy
from metasgd_rl.sampler import sample_episodes
from metasgd_rl_envs.navigation import Navigation2DFamily
from tests.tiny_config import write_config

TASKS = [{"goal": [-0.2, 0.2]}, {"goal": [0.25, -0.25]}]


class Raises(gym.Wrapper):
    def step(self, action):
        raise RuntimeError("simulator exploded")


class ResetRaises(gym.Wrapper):
    def reset(self, **kwargs):
        raise RuntimeError("no initial state")


class OldStep(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or truncated, info


class OldReset(gym.Wrapper):
    def reset(self, **kwargs):
        return self.env.reset(**kwargs)[0]


class ArrayReward(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, np.array([reward]), terminated, truncated, info


class Faulty(Navigation2DFamily):
    """Navigation2D through the generic vector env; the env of the second task is wrapped in ``wrapper``."""

    make_vector_env = TaskFamily.make_vector_env
    wrapper: type | None = None

    def __init__(self, max_episode_steps: int = 5):
        super().__init__(max_episode_steps)

    def make_env(self, task):
        env = super().make_env(task)
        return type(self).wrapper(env) if task["goal"][0] > 0 and type(self).wrapper else env

    def sample_tasks(self, n, rng, split="train"):
        return [dict(t) for t in TASKS[:n]]


def _rollout(family: TaskFamily) -> None:
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(4,))
    sample_episodes(family, policy, policy.task_parameters(2), TASKS, 2, seed=0)


# (wrapper, words the message must hold, the type of the chained original or None)
SUB_ENV_FAULTS = {
    "step-raises": (Raises, ["raised in step 1 of the rollout (episode 0): RuntimeError: simulator exploded",
                             "fix the env"], RuntimeError),
    "reset-raises": (ResetRaises, ["raised in reset (episode 0): RuntimeError: no initial state"], RuntimeError),
    "old-gym-step": (OldStep, ["returned a 4-tuple (the old gym API's observation, reward, done, info) in step 1",
                               "(observation, reward, terminated, truncated, info)"], ValueError),
    "old-gym-reset": (OldReset, ["returned a numpy.ndarray, not (observation, info)", "in reset (episode 0)"], None),
    "array-reward": (ArrayReward, ["returned a reward of shape (1,), not (), in step 1", "scalar reward"],
                     ValueError),
}


@pytest.mark.parametrize("fault", list(SUB_ENV_FAULTS))
def test_a_faulty_sub_env_names_family_task_and_stage_in_one_line(fault):
    wrapper, words, cause = SUB_ENV_FAULTS[fault]
    family = type("FaultyFamily", (Faulty,), {"wrapper": wrapper})()
    family.id = "Faulty-v0"
    with pytest.raises(TaskFamilyError) as info:
        _rollout(family)
    message = str(info.value)
    assert message.startswith("task family 'Faulty-v0': the env of task 1 of the meta-batch ({'goal': [0.25, -0.25]}) ")
    assert all(word in message for word in words), message
    assert "\n" not in message
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


class VectorFaulty(Navigation2DFamily):
    """Navigation2D's own batched vector env, made to raise or to return the old gym API's 4-tuple."""

    fault = "raise"

    def make_vector_env(self, tasks, episodes_per_task):
        venv = super().make_vector_env(tasks, episodes_per_task)
        step = venv.step

        def faulty_step(actions):
            if type(self).fault == "raise":
                raise RuntimeError("batched simulator exploded")
            return step(actions)[:4]

        venv.step = faulty_step
        return venv


@pytest.mark.parametrize("fault, words", [
    ("raise", "raised in step 1 of the rollout: RuntimeError: batched simulator exploded"),
    ("old-api", "returned a 4-tuple (the old gym API's observation, reward, done, info) in step 1"),
], ids=["raise", "old-api"])
def test_a_faulty_vector_env_names_family_tasks_and_stage(fault, words):
    family = type("VectorFaultyFamily", (VectorFaulty,), {"fault": fault})(max_episode_steps=5)
    family.id = "VectorFaulty-v0"
    with pytest.raises(TaskFamilyError) as info:
        _rollout(family)
    message = str(info.value)
    assert message.startswith("task family 'VectorFaulty-v0': make_vector_env's env for 2 tasks x 2 episodes "
                              "(tasks 0..1 of the meta-batch) ")
    assert words in message and "\n" not in message


class SampleRaises(Faulty):
    def sample_tasks(self, n, rng, split="train"):
        raise KeyError("goal_range")


def test_sample_tasks_that_raises_names_the_family_and_the_stage():
    model = msr.MetaSGD(Faulty(), policy_kwargs=dict(hidden_sizes=[4]), meta_batch_size=2, episodes_per_task=2,
                        outer="adam")
    model.family = SampleRaises()
    model.family.id = "SampleRaises-v0"
    with pytest.raises(TaskFamilyError) as info:
        model.train_step()
    assert str(info.value) == ("task family 'SampleRaises-v0': sample_tasks(2, rng, split='train') raised KeyError: "
                               "'goal_range'; fix the family's sample_tasks (msr.check_task_family(family) tests it)")
    assert isinstance(info.value.__cause__, KeyError)


@pytest.fixture
def family_id():
    name = f"Faulty{uuid.uuid4().hex[:8]}-v0"
    yield name
    registry._REGISTRY.pop(name, None)


@pytest.mark.parametrize("cls, code, words", [
    (type("StepRaises", (Faulty,), {"wrapper": Raises}), 1, "RuntimeError: simulator exploded"),
    (SampleRaises, 2, "sample_tasks(2, rng, split='train') raised KeyError"),
], ids=["step-raises", "sample-tasks-raises"])
def test_the_cli_ends_a_faulty_family_in_one_line(tmp_path, capsys, family_id, cls, code, words):
    msr.register_task_family(family_id, entry_point=cls)
    config = write_config(tmp_path / "c.yaml", family=family_id, iterations=1, eval_every=0)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metasgd-rl: error: ") and words in err, err
    assert family_id in err
