"""The README's quickstart and custom task family, and the custom-families guide's snippets, work as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import metasgd_rl as msr
from metasgd_rl import registry
from metasgd_rl.config import resolve_config, yaml_load
from tests.tiny_config import TINY

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guides" / "custom-families.md"


def _section_blocks(path: Path, heading: str, language: str) -> list[str]:
    """The ``language`` code blocks of the section ``## heading`` of ``path``."""
    section = path.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_quickstart_runs_as_written_at_a_smaller_size(tmp_path, monkeypatch):
    """The quickstart's calls, with 2 iterations and 2 evaluation tasks instead of 30 and 20 (the full size is
    timed by hand for the README)."""
    (block,) = _section_blocks(README, "Quickstart", "python")
    small = block.replace("model.learn(30)", "model.learn(2)").replace("n_tasks=20", "n_tasks=2")
    assert small.count("learn(2)") == 1 and small.count("n_tasks=2,") == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(small, str(README), "exec"), namespace)
    assert namespace["result"].returns.shape == (2, 2) and (tmp_path / "nav.pt").is_file()
    assert namespace["action"].shape == (2,)


def test_readme_family_registers_passes_the_check_and_trains():
    (block,) = _section_blocks(README, "Your own task family", "python")
    namespace: dict = {}
    try:
        exec(compile(block, str(README), "exec"), namespace)
        family = msr.make_task_family("PendulumMass-v0")
        train = family.sample_tasks(5, np.random.default_rng(0))
        test = family.sample_tasks(5, np.random.default_rng(0), split="test")
        assert not {t["mass"] for t in train} & {t["mass"] for t in test}
        assert namespace["model"].family.id == "PendulumMass-v0"
        small = msr.MetaSGD("PendulumMass-v0", meta_batch_size=2, episodes_per_task=2,
                            policy_kwargs=dict(hidden_sizes=(8,)), outer="adam")
        info = small.train_step()
        assert not info["update_rejected"] and small.config["family"] == "PendulumMass-v0"
    finally:
        registry._REGISTRY.pop("PendulumMass-v0", None)


# -- the custom-families guide's "Any gymnasium env as a family" section, executed as written ---------------------

def test_readme_gym_family_snippets_run_as_written():
    blocks = _section_blocks(GUIDE, "Any gymnasium env as a family", "python")
    assert len(blocks) == 2
    namespace = {"msr": msr, "np": np}
    try:
        for block in blocks:
            exec(compile(block, str(GUIDE), "exec"), namespace)
        family, hopper = namespace["family"], namespace["hopper"]
        task = family.sample_tasks(1, np.random.default_rng(0))[0]
        assert task == pytest.approx({"length": 0.73, "masspole": 0.073}, abs=5e-3)  # the value the guide shows
        msr.check_task_family(family)
        my = msr.make_task_family("MyCartPole-v0")
        env = my.make_env({"length": 0.8})
        assert env.unwrapped.polemass_length == pytest.approx(0.8 * env.unwrapped.masspole)
        assert len(hopper.sample_tasks(1, np.random.default_rng(0))[0]["model.body_mass"]) == 5
    finally:
        registry._REGISTRY.pop("MyCartPole-v0", None)


def test_readme_gym_family_yaml_is_a_valid_config(tmp_path):
    (block,) = _section_blocks(GUIDE, "Any gymnasium env as a family", "yaml")
    config = resolve_config({**TINY, **yaml_load(block)})
    family = msr.make_task_family(config["family"], **config["family_kwargs"])
    assert family.env_id == "Pendulum-v1" and sorted(family.parameters) == ["g", "m"]
    msr.check_task_family(family)
