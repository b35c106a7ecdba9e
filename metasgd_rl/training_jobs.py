"""Run ``metasgd-rl train`` runs as child processes, resumable, several at a time: the job runner of the
reproduction studies (``scripts/reproduce_locomotion.py``, ``scripts/reproduce_metaworld.py``).

A study trains many long runs on a few cores and must survive being stopped. Each run here is one
``python -m metasgd_rl train`` child process with one thread (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = 1 and
``num_threads=1``), so that ``jobs`` runs side by side share the cores evenly and their wall-clocks compare; its
output goes to a log beside its directory (``RUN_DIR.log``). :func:`train_run` decides what a run needs:

- a run whose ``final.pt`` is at the wanted iterations is reused (nothing runs);
- a run directory with a ``config.yaml`` (interrupted, or trained to fewer iterations) is continued with
  ``--resume`` and ``--set iterations=N``;
- otherwise a new run is created from its config with the ``--set`` overrides and ``--run-dir``.

:func:`run_jobs` runs such jobs a few at a time. After :func:`install_stop_handlers`, SIGINT/SIGTERM send SIGTERM
to every child, which stops after its current iteration with a checkpoint (``metasgd-rl train``'s own handling);
no new child starts, and running the same study again continues every run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


def stop_requested() -> bool:
    """Whether SIGINT/SIGTERM asked the study to stop (no new child starts after that)."""
    return _stopping.is_set()


def run_child(command: Sequence[str], log: Path) -> int:
    """Run ``command`` with one thread and its output appended to ``log``; its exit status. SIGTERM reaches it
    when the study is stopped; after that nothing starts (the status is then ``-SIGTERM``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(command)}   # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        with _children_lock:
            if _stopping.is_set():
                return -signal.SIGTERM
            proc = subprocess.Popen(list(command), stdout=f, stderr=subprocess.STDOUT, env=env)
            _children.add(proc)
        try:
            return proc.wait()
        finally:
            with _children_lock:
                _children.discard(proc)


def stop_children(prog: str) -> Callable[[int, Any], None]:
    """A signal handler that stops every child after its current iteration and lets no new one start;
    ``prog`` names the study in the message it prints."""

    def handler(signum: int, frame: Any) -> None:
        print(f"{prog}: {signal.Signals(signum).name}: every run stops after its current iteration "
              "with a checkpoint; continue with the same command", file=sys.stderr, flush=True)
        with _children_lock:
            _stopping.set()
            for proc in _children:
                proc.send_signal(signal.SIGTERM)

    return handler


def install_stop_handlers(prog: str) -> None:
    """SIGINT and SIGTERM stop the study's runs with a checkpoint (:func:`stop_children`)."""
    handler = stop_children(prog)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def trained_iterations(directory: Path, file: str = "final.pt") -> int | None:
    """The iteration of a run's ``final.pt`` (or of another checkpoint ``file``; None without one)."""
    import torch

    path = directory / file
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])


def unfinished_note(directory: Path, label: str) -> str:
    """``label`` and how far a run without ``final.pt`` has come, for a study's list of runs it cannot evaluate:
    "LABEL (checkpoint at iteration N)" or "LABEL (not started)"."""
    at = trained_iterations(directory, "checkpoint.pt")
    return f"{label} (checkpoint at iteration {at})" if at is not None else f"{label} (not started)"


def train_command(directory: Path, config: Path, iterations: int, sets: Sequence[str],
                  checkpoint_every: int) -> list[str]:
    """The ``metasgd-rl train`` command that brings the run in ``directory`` to ``iterations``: ``--resume`` of
    an existing run directory (one with ``config.yaml``), else a new run from ``config`` with ``sets`` (each a
    ``KEY=VALUE`` override), then ``num_threads=1``, and ``--run-dir``. Both log no progress bar and checkpoint
    every ``checkpoint_every`` iterations."""
    cli = [sys.executable, "-m", "metasgd_rl", "train"]
    common = ["--set", f"iterations={iterations}", "--set", "progress_bar=false",
              "--set", f"checkpoint_every={checkpoint_every}"]
    if (directory / "config.yaml").is_file():  # an interrupted or shorter run: continue it
        return [*cli, "--resume", str(directory), *common]
    overrides = [*sets, "num_threads=1"]
    return [*cli, str(config), *[x for s in overrides for x in ("--set", s)], *common, "--run-dir", str(directory)]


def train_run(directory: Path, config: Path, iterations: int, sets: Sequence[str], what: str,
              checkpoint_every: int = 10) -> str:
    """Train (or continue, or reuse) the run in ``directory`` to ``iterations`` (see :func:`train_command`);
    returns the line saying what was done. A run already past ``iterations`` is refused (``SystemExit``)."""
    done = trained_iterations(directory)
    if done is not None and done > iterations:
        raise SystemExit(f"{directory} has trained {done} iterations, more than the {iterations} asked for; use "
                         "another --out or ask for at least as many iterations")
    if done == iterations:
        return f"{what}: reused ({done} iterations)"
    command = train_command(directory, config, iterations, sets, checkpoint_every)
    return run_job(command, directory, what, f"trained to {iterations} iterations")


def run_job(command: Sequence[str], directory: Path, what: str, done: str) -> str:
    """Run one training ``command`` for ``directory`` (its log ``directory.log`` beside it); the line saying
    how it ended (``what: done in N s`` or ``what: stopped``). A failure raises ``RuntimeError`` naming the log."""
    start = time.perf_counter()
    log = directory.with_suffix(".log")
    rc = run_child(command, log)
    if _stopping.is_set():
        return f"{what}: stopped"
    if rc != 0:
        raise RuntimeError(f"{what} failed (exit {rc}); see {log}")
    return f"{what}: {done} in {time.perf_counter() - start:.0f} s"


def run_jobs(workers: int, jobs: Sequence[Callable[[], str]]) -> list[str]:
    """Run the callables ``jobs`` ``workers`` at a time, in order, printing each one's line; returns the
    failures' lines (a failed job does not stop the others, which keep their checkpoints)."""
    failures = []

    def guarded(job: Callable[[], str]) -> str:
        try:
            return job()
        except (RuntimeError, SystemExit) as err:
            failures.append(str(err))
            return f"FAILED: {err}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for line in pool.map(guarded, jobs):
            print(line, flush=True)
    return failures


# -- what every study script shares: its options, and publishing its runs -----------------------------------------

#: the files of a run that a study publishes beside its results (enough for ``metasgd-rl evaluate`` and the curves)
PUBLISHED_FILES = ("final.pt", "config.yaml", "metrics.csv")


def add_study_arguments(parser: argparse.ArgumentParser, default_out: Path, report_help: str) -> None:
    """The options every study script has: ``--set``, ``--jobs``, ``--reevaluate``, ``--evaluate-only``, ``--out``
    (``default_out``), ``--report-dir`` (``report_help``) and ``--publish``."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of every config (smoke runs)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one torch thread each")
    parser.add_argument("--reevaluate", action="store_true", help="ignore the cached evaluations")
    parser.add_argument("--evaluate-only", action="store_true", help="no training: evaluate the runs in --out")
    parser.add_argument("--out", type=Path, default=default_out, help="runs live here")
    parser.add_argument("--report-dir", type=Path, default=None, help=f"{report_help} (default: --out)")
    parser.add_argument("--publish", action="store_true",
                        help="copy final checkpoints, configs, metrics and evaluations into --report-dir")


def resolve_study_paths(args: argparse.Namespace) -> None:
    """``--out`` and ``--report-dir`` with ``~`` expanded; the report goes into ``--out`` unless told otherwise."""
    args.out = args.out.expanduser()
    args.report_dir = (args.out if args.report_dir is None else args.report_dir).expanduser()


def publish_run(source: Path, target: Path) -> bool:
    """Copy the :data:`PUBLISHED_FILES` of run directory ``source`` that exist into ``target``, if its ``final.pt``
    does; whether it did."""
    files = [f for f in PUBLISHED_FILES if (source / f).is_file()]
    if "final.pt" not in files:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(source / f, target / f)
    return True


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (hex): what caches of a checkpoint's evaluation are keyed by."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
