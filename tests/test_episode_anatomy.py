"""Episode anatomy: lengths, early ends, reward per step and action energy from a batch's mask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metasgd_rl.episode_anatomy import episode_anatomy
from metasgd_rl.sampler import EpisodeBatch

ROOT = Path(__file__).resolve().parent.parent


def _batch() -> EpisodeBatch:
    # horizon 4, two tasks, two episodes; task 0's episodes last 4 and 2 steps, task 1's both 4
    mask = torch.zeros(4, 2, 2)
    mask[:, 0, 0] = 1
    mask[:2, 0, 1] = 1
    mask[:, 1, :] = 1
    rewards = torch.full((4, 2, 2), -3.0) * mask
    rewards[:, 1] = 2.0
    actions = torch.zeros(4, 2, 2, 3)
    actions[..., 0] = 2.0  # ||a||^2 = 4 on task 0
    actions[:, 1, :, 1] = 1.0  # ||a||^2 = 5 on task 1
    actions = actions * mask[..., None]
    return EpisodeBatch(observations=torch.zeros(4, 2, 2, 1), actions=actions, rewards=rewards, mask=mask,
                        tasks=[{"direction": 1.0}, {"direction": -1.0}])


def test_anatomy_counts_only_the_steps_that_happened():
    short, full = episode_anatomy(_batch(), max_episode_steps=4)
    assert short["task"] == {"direction": 1.0}
    assert short["mean_length"] == 3.0 and short["ended_early"] == 0.5
    assert short["mean_return"] == pytest.approx((-12 - 6) / 2)
    assert short["reward_per_step"] == pytest.approx(-3.0)
    assert short["squared_action_per_step"] == pytest.approx(4.0)
    assert full["mean_length"] == 4.0 and full["ended_early"] == 0.0
    assert full["reward_per_step"] == pytest.approx(2.0) and full["squared_action_per_step"] == pytest.approx(5.0)


def test_a_longer_horizon_counts_every_episode_as_ended_early():
    rows = episode_anatomy(_batch(), max_episode_steps=200)
    assert [row["ended_early"] for row in rows] == [1.0, 1.0]
    with pytest.raises(ValueError, match="max_episode_steps=0"):
        episode_anatomy(_batch(), max_episode_steps=0)


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "episode_anatomy.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_script_refuses_bad_tasks_and_missing_checkpoints_in_one_line(tmp_path):
    bad = _script(str(tmp_path / "x.pt"), "--tasks", "[1, 2]")
    assert bad.returncode != 0 and "--tasks must be a non-empty JSON list of task objects" in bad.stderr
    missing = _script(str(tmp_path / "x.pt"))
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "x.pt" in missing.stderr and "Traceback" not in missing.stderr


def test_script_reports_a_saved_model(tmp_path):
    import metasgd_rl as msr

    model = msr.MetaSGD("Navigation2D-v0", policy_kwargs={"hidden_sizes": [8]}, seed=0)
    model.save(tmp_path / "model.pt")
    model.close()
    done = _script(str(tmp_path / "model.pt"), "--n-tasks", "2", "--episodes", "2", "--steps", "1",
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "anatomy.md").read_text()
    assert table.count("| 0 |") == 2 and table.count("| 1 |") == 2  # two tasks, before and after one step
    assert "/ 100 |" in table  # Navigation2D's horizon
