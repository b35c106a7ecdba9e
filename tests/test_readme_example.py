"""The README's custom task family (a gymnasium env with a varied physical parameter) works as written."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metasgd_rl as msr
from metasgd_rl import registry


class PendulumMass(msr.TaskFamily):
    """Pendulum with a random mass."""

    def __init__(self, low=0.5, high=2.0):
        env = gym.make("Pendulum-v1")
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.max_episode_steps = 200
        self.low, self.high = low, high

    def sample_tasks(self, n, rng, split="train"):
        rng = msr.split_generator(rng, split)
        return [{"mass": float(m)} for m in rng.uniform(self.low, self.high, size=n)]

    def make_env(self, task):
        env = gym.make("Pendulum-v1", max_episode_steps=self.max_episode_steps)
        env.unwrapped.m = task["mass"]
        return env


@pytest.fixture
def registered():
    msr.register_task_family("PendulumMass-test-v0")(PendulumMass)
    yield "PendulumMass-test-v0"
    registry._REGISTRY.pop("PendulumMass-test-v0", None)


def test_readme_family_registers_passes_the_check_and_trains(registered):
    family = msr.make_task_family(registered)
    msr.check_task_family(family)
    train = family.sample_tasks(5, np.random.default_rng(0))
    test = family.sample_tasks(5, np.random.default_rng(0), split="test")
    assert not {t["mass"] for t in train} & {t["mass"] for t in test}
    model = msr.MetaSGD(family, meta_batch_size=2, episodes_per_task=2, policy_kwargs=dict(hidden_sizes=(8,)),
                        outer="adam")
    info = model.train_step()
    assert not info["update_rejected"] and model.config["family"] == registered
