"""Run directories: exact resume, crash safety of checkpoints, save/load/adapt, log truncation."""

from __future__ import annotations

import json
import shutil
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


# -- a resume checks the checkpoint and the logs before it changes anything -----------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A complete tiny run (3 iterations, a checkpoint at each) that the tests below copy and damage."""
    return uninterrupted(tmp_path_factory.mktemp("finished") / "run", iterations=3, checkpoint_every=1, eval_every=0)


def copy_run(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with the bytes of the files."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(directory.rglob("*"))}


def refused_resume(run_dir: Path, capsys) -> str:
    """``train --resume run_dir`` for one more iteration must be refused in one line (exit 1), changing nothing."""
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"metasgd-rl: error: cannot resume {run_dir}: ") and err.count("\n") == 1, err
    assert err.rstrip().endswith("(nothing was changed)"), err
    assert snapshot(run_dir) == before
    return err


FINAL_OFFERED = ("its final.pt (iteration 3) is intact and belongs to the run: to continue from it, move "
                 "checkpoint.pt aside and copy final.pt to checkpoint.pt")


@pytest.mark.parametrize("other, expect", [
    (dict(seed=1), "seed (config.yaml 0, checkpoint 1)"),
    (dict(policy_kwargs=dict(hidden_sizes=[8])), "policy_kwargs.hidden_sizes (config.yaml [16], checkpoint [8])"),
    (dict(algo="maml"), "algo (config.yaml 'metasgd', checkpoint a MAML model)"),
    (dict(family="Navigation2D-v0", family_kwargs=dict(max_episode_steps=7)),
     "family_kwargs.max_episode_steps (config.yaml None, checkpoint 7)"),
], ids=["seed", "policy size", "algo", "family"])
def test_resume_refuses_a_checkpoint_from_another_run(tmp_path, finished, capsys, other, expect):
    run_dir = copy_run(finished, tmp_path)
    foreign = uninterrupted(tmp_path / "other", iterations=1, checkpoint_every=1, eval_every=0, **other)
    shutil.copy(foreign / "checkpoint.pt", run_dir / "checkpoint.pt")
    err = refused_resume(run_dir, capsys)
    assert "its checkpoint.pt does not belong to this run: it differs from config.yaml in " in err and expect in err
    assert FINAL_OFFERED in err  # the run's own final.pt still matches its config.yaml


def test_resume_refuses_a_config_yaml_edited_after_the_run_started(tmp_path, finished, capsys):
    run_dir = copy_run(finished, tmp_path)
    config = run_dir / "config.yaml"
    edits = {"seed: 0": "seed: 1", "gamma: 0.99": "gamma: 0.9", "gae_lambda: 1.0": "gae_lambda: 0.5",
             "meta_batch_size: 2": "meta_batch_size: 3"}
    text = config.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    err = refused_resume(run_dir, capsys)
    assert ("differs from config.yaml in meta_batch_size (config.yaml 3, checkpoint 2), gamma (config.yaml 0.9, "
            "checkpoint 0.99), gae_lambda (config.yaml 0.5, checkpoint 1.0) and 1 more, so it comes from another run "
            "or config.yaml was edited after the run started") in err
    assert "put back the run's own checkpoint.pt or config.yaml, or start a new run" in err  # final.pt differs too


def test_a_run_and_checkpoint_from_before_the_digest_and_later_keys_still_resume(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    for name in ("checkpoint.pt", "final.pt"):  # files from before the digest and before num_threads existed
        state = load_state(run_dir / name)
        del state["digest"]
        config = json.loads(state["config"])
        del config["num_threads"]
        torch.save({**state, "config": json.dumps(config)}, run_dir / name)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("num_threads: 1\n", ""))
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=4"]) == 0
    assert [r["iteration"] for r in metrics_rows(run_dir)] == ["1", "2", "3", "4"]


def flip_first_float(path: Path, tensor: torch.Tensor, bit: int) -> None:
    """Flip bit ``bit`` of ``tensor``'s first (float32) element where the file at ``path`` stores it."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.contiguous().numpy().tobytes())
    assert at >= 0 and bit < 32
    data[at + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def nan_in_adam(path: Path) -> None:
    """Overwrite the first second moment of the outer Adam's state in the file at ``path`` with a NaN's bytes."""
    data = bytearray(path.read_bytes())
    moment = load_state(path)["outer"]["state"][0]["exp_avg_sq"]
    at = data.find(moment.contiguous().numpy().tobytes())
    assert at >= 0
    data[at: at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


def damage_checkpoint(path: Path, damage: str) -> str:
    """Damage the checkpoint file ``path``; returns what the refusal must say."""
    if damage == "sign bit":
        flip_first_float(path, load_state(path)["policy"]["layers.0.weight"], 31)
        return f"{path} is damaged: its contents do not match the sha256 digest stored with them"
    if damage == "exponent bit":
        flip_first_float(path, load_state(path)["step_sizes"]["alphas.layers__0__weight"], 30)
        return f"{path} is damaged: its contents do not match the sha256 digest stored with them"
    if damage == "NaN in Adam's state":
        nan_in_adam(path)
        return f"{path} holds non-finite values (NaN or inf) in state.0.exp_avg_sq of the outer optimiser's state"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        return f"{path} is not a metasgd-rl checkpoint"
    path.unlink()
    path.mkdir()
    return "its checkpoint.pt is a directory, not a checkpoint file"


DAMAGES = ["sign bit", "exponent bit", "NaN in Adam's state", "truncated", "a directory"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_refuses_a_damaged_checkpoint_and_offers_the_intact_final_file(tmp_path, finished, capsys, damage):
    run_dir = copy_run(finished, tmp_path)
    expect = damage_checkpoint(run_dir / "checkpoint.pt", damage)
    err = refused_resume(run_dir, capsys)
    assert expect in err and FINAL_OFFERED in err, err


def test_resume_with_no_intact_checkpoint_at_all_says_so(tmp_path, finished, capsys):
    run_dir = copy_run(finished, tmp_path)
    expect = damage_checkpoint(run_dir / "checkpoint.pt", "NaN in Adam's state")
    damage_checkpoint(run_dir / "final.pt", "sign bit")
    err = refused_resume(run_dir, capsys)
    assert expect in err and "it has no intact final.pt to continue from either: restore checkpoint.pt or start a " \
        "new run" in err


def test_resume_does_not_restart_from_zero_when_the_checkpoint_is_missing(tmp_path, finished, capsys):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    err = refused_resume(run_dir, capsys)
    assert "it has no checkpoint.pt although it has final.pt, and resuming would start again from iteration 0" in err
    assert FINAL_OFFERED in err
    (run_dir / "final.pt").unlink()  # logs past the first checkpoint give it away too
    err = refused_resume(run_dir, capsys)
    assert "its logs reach iteration 3 and a checkpoint is written every 1" in err
    assert "it has no intact final.pt to continue from either" in err


def replace_line(path: Path, number: int, line: str | bytes) -> None:
    """Replace line ``number`` (1-based) of ``path`` with ``line`` (its newline included)."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = line.encode() if isinstance(line, str) else line
    path.write_bytes(b"".join(lines))


def cut_field(path: Path, number: int) -> None:
    replace_line(path, number, path.read_text().splitlines()[number - 1].rsplit(",", 1)[0] + "\n")


LOG_DAMAGES = {
    "misspelt header": (lambda d: replace_line(d / "metrics.csv", 1, (d / "metrics.csv").read_text().splitlines()[0]
                                               .replace("iteration", "iteratoin") + "\n"),
                        "the header of its metrics.csv is damaged ('iteratoin,loss,"),
    "header lost a column": (lambda d: cut_field(d / "metrics.csv", 1), "line 2 of its metrics.csv has"),
    "row lost a field": (lambda d: cut_field(d / "metrics.csv", 3), "line 3 of its metrics.csv has"),
    "row lost": (lambda d: replace_line(d / "metrics.csv", 3, ""), "its metrics.csv goes from iteration 1 to 3"),
    "last rows lost": (lambda d: replace_line(d / "metrics.csv", 4, ""),
                       "its metrics.csv ends at iteration 2, before the checkpoint's 3"),
    "not UTF-8": (lambda d: replace_line(d / "metrics.csv", 2, b"1,\xff\xfe\n"),
                  "line 2 of its metrics.csv is not UTF-8"),
    "metrics.csv a directory": (lambda d: ((d / "metrics.csv").unlink(), (d / "metrics.csv").mkdir()),
                                "its metrics.csv is a directory"),
    "a tasks line that is not JSON": (lambda d: replace_line(d / "tasks.jsonl", 2, "{\"iteration\": 2, \"ta\n"),
                                      "line 2 of its tasks.jsonl is not a JSON record"),
    "a multi-MB tasks line": (lambda d: replace_line(d / "tasks.jsonl", 2, "x" * (9 * 2**20) + "\n"),
                              "line 2 of its tasks.jsonl is over 8 MiB long"),
}


@pytest.mark.parametrize("damage", list(LOG_DAMAGES))
def test_resume_refuses_logs_it_would_lose_rows_of(tmp_path, finished, capsys, damage):
    run_dir = copy_run(finished, tmp_path)
    make, expect = LOG_DAMAGES[damage]
    make(run_dir)
    err = refused_resume(run_dir, capsys)
    assert expect in err and "would lose its rows: repair it, or move it aside to continue without them" in err, err


def test_a_log_that_began_with_a_later_resume_does_not_block_the_next_one(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "tasks.jsonl").unlink()  # a run directory copied without it, as the study's snapshots are
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=4"]) == 0
    assert [json.loads(line)["iteration"] for line in (run_dir / "tasks.jsonl").read_text().splitlines()] == [4]
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=5"]) == 0
    assert [r["iteration"] for r in metrics_rows(run_dir)] == ["1", "2", "3", "4", "5"]
