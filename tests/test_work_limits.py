"""A config or checkpoint cannot ask for unbounded work: a horizon, task or episode count, hidden size or number of
inner steps beyond the hard limits of metasgd_rl.limits is refused in one line naming the key, the value and the
limit, before anything runs (a checkpoint asking for 1e9-step episodes made `metasgd-rl evaluate` run for days)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metasgd_rl import MetaSGD
from metasgd_rl.cli import main
from metasgd_rl.limits import WORK_LIMITS, WorkLimitError, check_work_limits
from metasgd_rl.model import DIGEST_KEY, CheckpointError, checkpoint_digest
from tests.tiny_config import write_config

ROOT = Path(__file__).resolve().parent.parent

# (the --set override, what the one-line refusal must name)
OVER_LIMIT = [
    ("family_kwargs.max_episode_steps=1e9", "family_kwargs.max_episode_steps=1000000000.0 is not allowed; use an "
                                            "integer from 1 to 100,000"),
    ("family_kwargs.max_episode_steps=100001", "family_kwargs.max_episode_steps=100001 is not allowed"),
    ("family_kwargs.max_episode_steps=20.5", "family_kwargs.max_episode_steps=20.5 is not allowed"),
    ("meta_batch_size=10001", "meta_batch_size=10001 is not allowed; use an integer from 1 to 10,000"),
    ("episodes_per_task=10001", "episodes_per_task=10001 is not allowed"),
    ("eval_tasks=10001", "eval_tasks=10001 is not allowed"),
    ("inner_steps=101", "inner_steps=101 is not allowed; use an integer from 1 to 100"),
    ("policy_kwargs.hidden_sizes=[8,100001]", "policy_kwargs.hidden_sizes=[8, 100001] is not allowed; use layer sizes "
                                              "from 1 to 100,000"),
]


@pytest.mark.parametrize("override, expected", OVER_LIMIT, ids=[o for o, _ in OVER_LIMIT])
def test_a_config_over_a_work_limit_is_refused_in_one_line_before_the_run_dir(tmp_path, capsys, override, expected):
    config = write_config(tmp_path / "c.yaml")
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "hard limit" in err, err
    assert not run_dir.exists()


def _checkpoint_asking(tmp_path: Path, key: str, value: object) -> Path:
    """A valid checkpoint whose config sets ``key`` (dots reach into nested mappings), digest recomputed (a crafted
    file, not a damaged one)."""
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1)
    path = model.save(tmp_path / "crafted.pt")
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    section, _, name = key.rpartition(".")
    if section:
        config[section] = dict(config.get(section) or {})
    (config[section] if section else config)[name] = value
    state["config"] = json.dumps(config)
    state[DIGEST_KEY] = checkpoint_digest(state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("key, value", [("family_kwargs.max_episode_steps", 1e9), ("inner_steps", 10**6),
                                        ("episodes_per_task", 10**7)])
def test_a_checkpoint_over_a_work_limit_is_not_loaded(tmp_path, key, value):
    path = _checkpoint_asking(tmp_path, key, value)
    with pytest.raises(CheckpointError, match=rf"crafted.pt asks for too much work, so it is not loaded: {key}="):
        MetaSGD.load(path)


def test_evaluate_refuses_a_checkpoint_asking_for_a_billion_steps_at_once(tmp_path):
    """In a subprocess with a timeout: without the limit this evaluation would run for days."""
    path = _checkpoint_asking(tmp_path, "family_kwargs.max_episode_steps", 10**9)
    result = subprocess.run([sys.executable, "-m", "metasgd_rl", "evaluate", str(path), "--tasks", "1", "--steps",
                             "0", "--episodes", "1"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "family_kwargs.max_episode_steps=1000000000 is not allowed; use an integer from 1 to 100,000" \
        in result.stderr


def test_a_resumed_run_whose_config_was_edited_over_a_limit_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)), "--run-dir",
                 str(run_dir)]) == 0
    saved = run_dir / "config.yaml"
    saved.write_text(saved.read_text().replace("episodes_per_task: 2", "episodes_per_task: 100000"))
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "episodes_per_task=100000 is not allowed" in err, err


class _Family:
    id = "Long-v0"
    max_episode_steps = 10**6


def test_the_limits_check_types_and_the_built_familys_horizon():
    check_work_limits({key: 1 for key in WORK_LIMITS if "." not in key})
    check_work_limits({"family_kwargs": {"max_episode_steps": None}, "policy_kwargs": {"hidden_sizes": []}})
    for bad in ({"meta_batch_size": True}, {"meta_batch_size": 2.0}, {"inner_steps": 0},
                {"policy_kwargs": {"hidden_sizes": [4] * 101}}):
        with pytest.raises(WorkLimitError):
            check_work_limits(bad)
    with pytest.raises(WorkLimitError, match=r"family 'Long-v0' built from this config has max_episode_steps=1000000"):
        check_work_limits({}, _Family())
