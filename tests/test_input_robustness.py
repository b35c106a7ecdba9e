"""Issue 14: what a user feeds the loaders and the CLI ends in one clear line, never a traceback or a silent wrong
result: run directories that cannot be used, settings whose memory cannot fit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metasgd_rl.cli import main
from metasgd_rl.config import ConfigError, load_config, resolve_config
from metasgd_rl.memory import MemoryCheckError, available_memory, check_memory, estimate_memory
from metasgd_rl.run import Run, RunError
from tests.tiny_config import TINY, write_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CARTPOLE = {"length": {"uniform": [0.4, 0.6]}}


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("metasgd-rl: error: ") and err.count("\n") == 1, err
    return err


# -- point 3: run directories ------------------------------------------------------------------------------------


def deny_writes_as_root(monkeypatch, folder: Path) -> None:
    """chmod does not stop root: make os.access answer as it would for a normal user on ``folder``."""
    if os.geteuid() != 0:
        return
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(folder.absolute()):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("case", ["existing file", "parent is a file", "not writable", "not empty, no run"])
def test_an_unusable_run_dir_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    run_dir, expected = {
        "existing file": ("afile", "run_dir='afile' is not allowed: it is a file; use a new directory path "
                                   "(--run-dir DIR)"),
        "parent is a file": ("afile/run", f"run_dir='afile/run' is not allowed: '{tmp_path / 'afile'}' is a file, "
                                          "not a directory; use a run_dir whose parent is a directory (--run-dir)"),
        "not writable": ("locked/run", f"run_dir='locked/run' is not allowed: '{tmp_path / 'locked'}' is not "
                                       "writable (permission denied); use a run_dir in a writable directory"),
        "not empty, no run": ("other", "run_dir='other' is not allowed: it already exists and is not empty (and "
                                       "holds no run); use a new or empty directory (--run-dir)"),
    }[case]
    os.chmod(tmp_path / "locked", 0o555)
    deny_writes_as_root(monkeypatch, tmp_path / "locked")
    before = files_under(tmp_path)
    try:
        assert main(["train", str(config), "--run-dir", run_dir]) == 2
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    err = one_error_line(capsys)
    assert expected in err and "--resume" not in err, err
    assert files_under(tmp_path) == before


def test_a_failed_write_of_a_new_run_dir_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import metasgd_rl.run as run_module

    def full(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_module, "atomic_write_text", full)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 1
    err = one_error_line(capsys)
    assert f"cannot create the run directory {tmp_path / 'run'}: No space left on device" in err
    assert not (tmp_path / "run").exists()


def test_resuming_a_read_only_run_is_one_line(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    Run.create(resolve_config({**TINY, "iterations": 1, "eval_every": 0, "run_dir": str(run_dir)}))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    os.chmod(run_dir, 0o555)
    deny_writes_as_root(monkeypatch, run_dir)
    try:
        assert main(["train", "--resume", str(run_dir)]) == 2
    finally:
        os.chmod(run_dir, 0o755)
    err = one_error_line(capsys)
    assert f"--resume '{run_dir}' is not allowed: the run directory is not writable (permission denied)" in err
    assert f"chmod -R u+w {run_dir}" in err and "copy the run directory to a writable place" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_failed_write_while_resuming_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from metasgd_rl.run import CsvLog

    run_dir = tmp_path / "run"
    Run.create(resolve_config({**TINY, "iterations": 1, "eval_every": 0, "run_dir": str(run_dir)}))

    def denied(self, iteration):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(CsvLog, "truncate", denied)
    with pytest.raises(RunError, match=r"cannot resume .*: writing .*metrics.csv failed \(Permission denied\)"):
        Run.resume(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 1
    one_error_line(capsys)


def test_resume_of_a_file_says_it_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "final.pt").write_bytes(b"x")
    assert main(["train", "--resume", str(tmp_path / "final.pt")]) == 2
    assert "is a file, not a run directory; give the run directory" in one_error_line(capsys)


# -- point 4: settings whose memory cannot fit ---------------------------------------------------------------------


def test_estimate_memory_follows_its_documented_formula():
    config = resolve_config({**TINY, "run_dir": "unused"})
    estimate = estimate_memory(config)
    # Navigation2D: obs 2, act 2, horizon 100; policy 2-16-2 + log_std: P = 48 + 34 + 2 = 84, element α: A = P
    p, horizon, steps = 84, 100, 1
    t, e, step_numbers = config["meta_batch_size"], config["episodes_per_task"], 2 + 2 + 4
    assert estimate.parts == {
        "parameters": 4 * (4 * p + 4 * p),
        "adapted": 4 * 2 * steps * t * p,
        "rollouts": 4 * (steps + 1) * horizon * t * e * step_numbers,
        "activations": 4 * horizon * t * e * 16,
        "evaluation": 4 * config["eval_tasks"] * (p + (steps + 1) * horizon * e * step_numbers),
    }
    training = estimate.parts["adapted"] + estimate.parts["rollouts"] + estimate.parts["activations"]
    assert estimate.total == estimate.parts["parameters"] + max(training, estimate.parts["evaluation"])
    with pytest.raises(MemoryCheckError, match=r"^policy_kwargs.hidden_sizes=\[16\] need at least 55.2 kB of memory "
                                               r"\(evaluation 26.3 kB, .*\) but 1.0 kB is available; lower "
                                               r"policy_kwargs.hidden_sizes$"):
        check_memory(config, available=1000)
    assert available_memory() is None or available_memory() > 0


@pytest.mark.parametrize("name", ["navigation2d-metasgd", "navigation2d-maml", "bandit-metasgd",
                                  "tabular-mdp-metasgd", "cartpole-randparams-metasgd"])
def test_the_shipped_configs_need_far_less_than_a_small_machine(tmp_path, name):
    # every shipped config also passes the check in resolve_config (test_cli's test_the_shipped_configs_validate)
    config = load_config(CONFIGS / f"{name}.yaml", run_dir=str(tmp_path / "r"))
    assert estimate_memory(config).total < 2**30


HUGE = [
    (["meta_batch_size=1000000000"], "error: meta_batch_size=1000000000 need at least 26.3 TB of memory"),
    (["episodes_per_task=1000000000"], "error: episodes_per_task=1000000000 need at least 25.6 TB of memory"),
    (["eval_every=1", "eval_tasks=1000000000"], "error: eval_tasks=1000000000 need at least 13.1 TB of memory"),
    (["policy_kwargs.hidden_sizes=[1000000000]"],
     "error: policy_kwargs.hidden_sizes=[1000000000] need at least 1.8 TB of memory"),
]


@pytest.mark.parametrize("sets, expected", HUGE, ids=[s[-1] for s, _ in HUGE])
def test_a_setting_whose_memory_cannot_fit_is_refused_before_the_run_dir(tmp_path, monkeypatch, capsys, sets,
                                                                          expected):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml")
    argv = ["train", str(config)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert expected in err and " is available; lower " in err, err
    assert files_under(tmp_path) == {"c.yaml"}


def test_run_create_checks_memory_too(tmp_path):
    config = resolve_config({**TINY, "run_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=r"meta_batch_size=1000000000.* need at least .* is available"):
        Run.create({**config, "meta_batch_size": 10**9})
    assert not (tmp_path / "run").exists()
