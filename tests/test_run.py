"""Run directories: exact resume, crash safety of checkpoints, save/load/adapt, log truncation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from metasgd_rl import MAML, MetaSGD, evaluate_adaptation
from metasgd_rl.cli import main
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.run import CsvLog, JsonlLog, Run
from tests.tiny_config import TINY, assert_same_state, load_state, metrics_rows, write_config


class Crash(Exception):
    """Stands in for a process dying between two iterations."""


def crash_after(iteration: int):
    def callback(info):
        if info["iteration"] == iteration:
            raise Crash(iteration)

    return callback


def uninterrupted(directory: Path, **changes) -> Path:
    Run.create(resolve_config({**TINY, **changes, "run_dir": str(directory)})).train()
    return directory


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    """TINY (Adam, 4 iterations) trained without interruption."""
    return uninterrupted(tmp_path_factory.mktemp("a") / "run")


def assert_same_run(a: Path, b: Path) -> None:
    assert metrics_rows(a) == metrics_rows(b)
    assert (a / "tasks.jsonl").read_text() == (b / "tasks.jsonl").read_text()
    assert_same_state(load_state(a / "final.pt"), load_state(b / "final.pt"))
    assert_same_state(load_state(a / "checkpoint.pt"), load_state(b / "checkpoint.pt"))


# -- resume ≡ uninterrupted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outer", ["adam", "trpo"])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, run_a, outer):
    changes = {} if outer == "adam" else dict(outer="trpo", outer_kwargs=None)
    a = run_a if outer == "adam" else uninterrupted(tmp_path / "a", **changes)
    b = tmp_path / "b"
    run = Run.create(resolve_config({**TINY, **changes, "run_dir": str(b)}))
    with pytest.raises(Crash):
        run.train(callback=crash_after(3))  # iteration 3 is logged, but its checkpoint would come at 4
    assert load_state(b / "checkpoint.pt")["iteration"] == 2
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2", "3"]
    assert not (b / "final.pt").exists()

    resumed = Run.resume(b)
    assert resumed.model.iteration == 2
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2"]  # iteration 3 is recomputed
    resumed.train()

    rows = metrics_rows(b)
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[1]["eval/post_return"] and rows[3]["eval/post_return"] and not rows[2]["eval/post_return"]
    assert_same_run(a, b)


def test_resume_with_more_iterations_through_the_cli_equals_the_uninterrupted_run(tmp_path, run_a, capsys):
    config = write_config(tmp_path / "tiny.yaml")
    b = tmp_path / "b"
    assert main(["train", str(config), "--set", "iterations=3", "--run-dir", str(b)]) == 0
    assert load_state(b / "final.pt")["iteration"] == 3
    assert main(["train", "--resume", str(b), "--set", "iterations=4"]) == 0
    assert "iterations: 4" in (b / "config.yaml").read_text()
    assert_same_run(run_a, b)


def test_resume_refuses_a_change_that_would_alter_the_run(tmp_path, run_a, capsys):
    config = write_config(tmp_path / "tiny.yaml")
    b = tmp_path / "b"
    assert main(["train", str(config), "--set", "iterations=2", "--run-dir", str(b)]) == 0
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(b), "--set", "gamma=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gamma=0.5" in err and "gamma=0.99" in err and "iterations" in err
    assert main(["train", str(config), "--resume", str(b), "--set", "seed=1"]) == 2
    assert "seed=1" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before  # nothing written


# -- SIGKILL in the middle of writing a checkpoint ---------------------------------------------------------

KILL_ON_SECOND_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import metasgd_rl.io as mio
    from metasgd_rl.cli import main

    real_os, writes = mio.os, []

    class KillOnSecondCheckpoint:
        # os for metasgd_rl.io: the 2nd checkpoint.pt write dies after half of its temporary file is written
        def __getattr__(self, name):
            return getattr(real_os, name)

        def replace(self, src, dst):
            if Path(dst).name == "checkpoint.pt":
                writes.append(dst)
                if len(writes) == 2:
                    real_os.truncate(src, real_os.path.getsize(src) // 2)
                    real_os.kill(real_os.getpid(), signal.SIGKILL)
            return real_os.replace(src, dst)

    mio.os = KillOnSecondCheckpoint()
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_mid_checkpoint_leaves_the_previous_checkpoint_and_resume_completes(tmp_path, run_a, capsys):
    config = write_config(tmp_path / "tiny.yaml", checkpoint_every=1)
    b = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_CHECKPOINT, "train", str(config), "--run-dir", str(b)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    # the interrupted write left a partial temporary file, which is not loadable ...
    partial = list(b.glob(".checkpoint.pt.*.tmp"))
    assert len(partial) == 1
    with pytest.raises(Exception):  # noqa: B017  (any error: the file is cut in half)
        torch.load(partial[0], weights_only=True)
    # ... while the previous checkpoint is intact and safe to load
    assert load_state(b / "checkpoint.pt")["iteration"] == 1
    assert MetaSGD.load(b / "checkpoint.pt").iteration == 1
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2"]

    assert main(["train", "--resume", str(b)]) == 0
    assert not list(b.glob(".*.tmp"))
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2", "3", "4"]
    assert_same_state(load_state(run_a / "final.pt"), load_state(b / "final.pt"))
    assert metrics_rows(run_a) == metrics_rows(b)


# -- Ctrl-C / SIGTERM: stop after the iteration and save ------------------------------------------------------

SIGNAL_AFTER_SECOND_ITERATION = textwrap.dedent("""
    import os, signal, sys
    from metasgd_rl.cli import main
    from metasgd_rl.run import Run

    sig, times = getattr(signal, sys.argv[1]), int(sys.argv[2])
    log_iteration = Run.log_iteration

    def log_then_signal(self, info):
        log_iteration(self, info)
        if info["iteration"] == 2:  # as if the user pressed Ctrl-C (or a scheduler sent SIGTERM) here
            for _ in range(times):
                os.kill(os.getpid(), sig)

    Run.log_iteration = log_then_signal
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_after_the_iteration_saves_a_checkpoint_and_resume_completes(tmp_path, run_a, name):
    config = write_config(tmp_path / "tiny.yaml", checkpoint_every=3)  # no periodic checkpoint at iteration 2
    b = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_SECOND_ITERATION, name, "1", "train", str(config),
                           "--run-dir", str(b)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + getattr(signal, name), proc.stderr
    assert f"{name}: stopping after iteration" in proc.stderr
    assert "stopped at iteration 2, checkpoint saved" in proc.stderr and "--resume" in proc.stderr
    assert load_state(b / "checkpoint.pt")["iteration"] == 2 and not (b / "final.pt").exists()
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2"]
    assert main(["train", "--resume", str(b)]) == 0
    assert_same_state(load_state(run_a / "final.pt"), load_state(b / "final.pt"))
    assert metrics_rows(run_a) == metrics_rows(b)


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", checkpoint_every=1)
    b = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_SECOND_ITERATION, "SIGINT", "2", "train", str(config),
                           "--run-dir", str(b)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted at iteration 2" in proc.stderr
    assert load_state(b / "checkpoint.pt")["iteration"] == 2  # iteration 2's periodic one, nothing after it
    assert not (b / "final.pt").exists() and [r["iteration"] for r in metrics_rows(b)] == ["1", "2"]
    assert main(["train", "--resume", str(b)]) == 0 and load_state(b / "final.pt")["iteration"] == 4


# -- save -> load -> adapt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MetaSGD, MAML])
def test_save_load_adapt_gives_identical_actions(tmp_path, cls):
    model = cls("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=2, episodes_per_task=2,
                outer="adam", outer_kwargs=dict(lr=0.01), seed=1)
    model.learn(2, progress_bar=False)
    path = model.save(tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)  # tensors and plain values only: nothing is unpickled
    assert state["iteration"] == 2
    loaded = MetaSGD.load(path)
    assert type(loaded) is cls and loaded.iteration == 2

    task = model.family.sample_tasks(1, np.random.default_rng(5), split="test")[0]
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(64, 2)).astype(np.float32)
    original = model.adapt(task, steps=2, episodes=2, seed=7)
    restored = loaded.adapt(task, steps=2, episodes=2, seed=7)
    actions, _ = original.predict(obs, deterministic=True)
    assert np.array_equal(actions, restored.predict(obs, deterministic=True)[0])
    noisy = [p.predict(obs, deterministic=False, generator=torch.Generator().manual_seed(3))[0]
             for p in (original, restored)]
    assert np.array_equal(*noisy)
    # the adaptation matters, so equal actions mean equal θ and α, not merely an equal initialisation
    assert not np.array_equal(actions, model.adapt(task, steps=0).predict(obs, deterministic=True)[0])

    model.train_step()
    loaded.train_step()  # training continues identically (outer optimiser state restored)
    assert_same_state(model.state_dict(), loaded.state_dict())


# -- pieces ----------------------------------------------------------------------------------------------------


def test_truncating_the_logs_drops_later_iterations_and_a_line_cut_by_a_kill(tmp_path):
    metrics = CsvLog(tmp_path / "metrics.csv")
    for i in range(1, 5):
        metrics.append({"iteration": i, "loss": 0.5 * i} | ({"eval/return": -1.0} if i == 2 else {}))
    assert metrics.read()[0] == ["iteration", "loss", "eval/return"]
    with open(metrics.path, "a") as f:
        f.write("5,2.")  # a row cut by SIGKILL
    tasks = JsonlLog(tmp_path / "tasks.jsonl")
    for i in range(1, 5):
        tasks.append({"iteration": i, "tasks": [{"goal": [i, 0]}]})
    with open(tasks.path, "a") as f:
        f.write('{"iteration": 5, "ta')

    metrics.truncate(3)
    tasks.truncate(3)
    header, rows = CsvLog(metrics.path).read()
    assert header == ["iteration", "loss", "eval/return"]
    assert [(r["iteration"], r["eval/return"]) for r in rows] == [("1", ""), ("2", "-1.0"), ("3", "")]
    assert metrics.path.read_text().endswith("\n")
    assert [json.loads(line)["iteration"] for line in tasks.path.read_text().splitlines()] == [1, 2, 3]


def test_a_new_run_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"run_dir=.*taken.*not empty"):
        Run.create(resolve_config({**TINY, "run_dir": str(tmp_path / "taken")}))
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_evaluate_adaptation_is_seeded_and_leaves_the_model_alone():
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), seed=0)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    first = evaluate_adaptation(model, n_tasks=3, steps=2, episodes=2, seed=4)
    again = evaluate_adaptation(model, n_tasks=3, steps=2, episodes=2, seed=4)
    other = evaluate_adaptation(model, n_tasks=3, steps=2, episodes=2, seed=5)
    assert first.returns.shape == (3, 3) and np.isfinite(first.returns).all()
    assert np.array_equal(first.returns, again.returns) and first.tasks == again.tasks
    assert not np.array_equal(first.returns, other.returns)
    assert first.mean().shape == (3,) and (first.ci95() > 0).all()
    assert_same_state(before, model.policy.state_dict())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["022", "077"])
def test_files_are_written_with_the_mode_the_umask_gives(tmp_path, umask, mode):
    import os

    from metasgd_rl.io import atomic_torch_save, atomic_write_text

    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "report.md", "x\n")
        checkpoint = atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "checkpoint.pt")
        run = Run.create(resolve_config({**TINY, "run_dir": str(tmp_path / "run")}))
        atomic_write_text(text, "rewritten\n")
    finally:
        os.umask(old)
    for path in (text, checkpoint, run.directory / "config.yaml"):
        assert path.stat().st_mode & 0o777 == mode, (path, oct(path.stat().st_mode))


def test_the_cli_prints_the_summary_without_the_progress_bar_and_learn_stays_quiet(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", iterations=1, eval_every=0)  # TINY: progress_bar=False
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "MetaSGD: 1 iterations to 1, " in out and "post-adaptation" in out and "updates rejected" in out
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2,
                    episodes_per_task=2)
    model.learn(1, progress_bar=False)
    assert capsys.readouterr().out == ""
    model.learn(1, progress_bar=False, summary=True)
    assert capsys.readouterr().out.startswith("MetaSGD: 1 iterations to 2, ")


def test_the_progress_bar_of_a_resumed_run_counts_from_the_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", iterations=2, eval_every=0)
    b = tmp_path / "b"
    assert main(["train", str(config), "--run-dir", str(b)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(b), "--set", "iterations=4", "--set", "progress_bar=true"]) == 0
    err = capsys.readouterr().err
    assert "2/4" in err and "4/4" in err, err
    assert "0/2" not in err and "2/2" not in err, err


def test_resuming_a_finished_run_changes_nothing_and_says_so_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", iterations=2)
    b = tmp_path / "b"
    assert main(["train", str(config), "--run-dir", str(b)]) == 0
    capsys.readouterr()

    def listing():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in b.iterdir()}

    before = listing()
    for sets in ([], ["--set", "iterations=2", "--set", "eval_every=1"]):
        assert main(["train", "--resume", str(b), *sets]) == 0
        assert listing() == before  # no file rewritten, no TensorBoard events file added
        out = capsys.readouterr().out
        assert out == (f"metasgd-rl: run {b} is already at iteration 2 of 2; nothing to do (give --set "
                       "iterations=M with M > 2 to train longer)\n")
