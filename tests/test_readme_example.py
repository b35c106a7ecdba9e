"""The README's custom task family (a gymnasium env with a varied physical parameter) works as written."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import metasgd_rl as msr
from metasgd_rl import registry
from metasgd_rl.config import resolve_config, yaml_load
from tests.tiny_config import TINY


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


# -- the README's "Any gymnasium env as a family" section, executed as written -----------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def _section_blocks(heading: str, language: str) -> list[str]:
    text = README.read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_gym_family_snippets_run_as_written():
    blocks = _section_blocks("Any gymnasium env as a family", "python")
    assert len(blocks) == 2
    namespace = {"msr": msr, "np": np}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        family, hopper = namespace["family"], namespace["hopper"]
        task = family.sample_tasks(1, np.random.default_rng(0))[0]
        assert task == pytest.approx({"length": 0.73, "masspole": 0.073}, abs=5e-3)  # the value the README shows
        msr.check_task_family(family)
        my = msr.make_task_family("MyCartPole-v0")
        env = my.make_env({"length": 0.8})
        assert env.unwrapped.polemass_length == pytest.approx(0.8 * env.unwrapped.masspole)
        assert len(hopper.sample_tasks(1, np.random.default_rng(0))[0]["model.body_mass"]) == 5
    finally:
        registry._REGISTRY.pop("MyCartPole-v0", None)


def test_readme_gym_family_yaml_is_a_valid_config(tmp_path):
    (block,) = _section_blocks("Any gymnasium env as a family", "yaml")
    config = resolve_config({**TINY, **yaml_load(block)})
    family = msr.make_task_family(config["family"], **config["family_kwargs"])
    assert family.env_id == "Pendulum-v1" and sorted(family.parameters) == ["g", "m"]
    msr.check_task_family(family)
