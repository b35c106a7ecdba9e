"""A training run and its directory: config, metrics, TensorBoard events, checkpoints; exact resume.

Layout of a run directory::

    config.yaml        the resolved config (every default filled in); ``--resume`` reads it
    metrics.csv        one row per iteration: loss, pre/post returns, seconds, outer/*, alpha/*, eval/*
    tasks.jsonl        the tasks of every iteration, one JSON line per iteration
    events.out.tfevents.*   the same scalars for TensorBoard (``tensorboard --logdir runs``)
    checkpoint.pt      θ, α, the outer optimiser's state and the iteration, every ``checkpoint_every``
                       iterations and at the end (tensors + JSON: ``torch.load(..., weights_only=True)``), with a
                       sha256 digest of all of it that loading verifies
    final.pt           the same, written once ``iterations`` are done

Every file except the two append-only logs is written atomically (temporary file + rename), so a SIGKILL at
any moment leaves the previous checkpoint intact and loses at most the iterations since it. Each
iteration's randomness derives only from (seed, iteration), so :meth:`Run.resume` — which truncates the
logs back to the checkpoint's iteration and continues from there — reproduces an uninterrupted run's
metrics and parameters exactly. Before it changes any file, a resume checks that the checkpoint is intact and
belongs to the run (its config equals ``config.yaml``) and that the logs hold every iteration up to it; it refuses
in one line otherwise. TensorBoard events are appended, not truncated: a resumed run's writer uses
``purge_step`` so TensorBoard discards the events of the repeated iterations.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metasgd_rl.callbacks import BaseCallback, CallbackLike
from metasgd_rl.config import (
    RESUME_MUTABLE,
    ConfigError,
    apply_overrides,
    build_model,
    check_config_memory,
    load_config,
    model_class,
    model_kwargs,
    read_yaml_file,
    resolve_config,
    yaml_dump,
)
from metasgd_rl.evaluation import evaluate_adaptation
from metasgd_rl.gym_family import env_import_message, module_env_ids
from metasgd_rl.io import atomic_write_text, close_path, fsync_path, path_length_problem
from metasgd_rl.model import (
    DEFAULT_POLICY_KWARGS,
    CheckpointError,
    EnvImportError,
    MetaSGD,
    checked_checkpoint,
    constructor_defaults,
    verify_digest,
    with_legacy_defaults,
)
from metasgd_rl.quote import short_repr

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
TASKS_FILE = "tasks.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
FINAL_FILE = "final.pt"
#: spawn key of the held-out evaluation's seed under the run's seed (the model uses keys 0..4)
EVAL_STREAM = 1000

_TB_TAGS = {"loss": "train/loss", "pre_return": "train/pre_return", "post_return": "train/post_return",
            "pre_success": "train/pre_success", "post_success": "train/post_success",
            "update_rejected": "train/update_rejected", "seconds": "time/seconds_per_iteration"}


class RunError(RuntimeError):
    """A run directory that cannot be continued (not a config problem: e.g. an unreadable checkpoint)."""


# -- append-only logs ---------------------------------------------------------------------------------------


def complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of ``path`` (a last line cut by a kill is dropped); [] if missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines


def _holds(path: Path, text: str) -> bool:
    """Whether the file ``path`` holds exactly ``text`` (then a rewrite would change nothing but its mtime)."""
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _up_to(row: Any, iteration: int) -> bool:
    """Whether a logged row belongs to an iteration ``<= iteration`` (malformed rows do not)."""
    try:
        return int(row["iteration"]) <= iteration
    except (KeyError, TypeError, ValueError):
        return False


class CsvLog:
    """``metrics.csv``: rows appended one per iteration; a row with new columns rewrites the file (atomically)
    with the wider header, earlier rows leaving those cells empty."""

    def __init__(self, path: Path):
        self.path = path
        self.fields, _ = self.read()

    def read(self) -> tuple[list[str], list[dict[str, str]]]:
        """Header and complete rows."""
        reader = csv.reader(complete_lines(self.path))
        header = next(reader, [])
        return header, [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]

    def append(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            header, rows = self.read()
            self.fields = header + [k for k in row if k not in header]
            self._rewrite([*rows, row])
            return
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow([_format(row.get(k)) for k in self.fields])

    def truncate(self, iteration: int) -> None:
        """Keep the rows of iterations ``<= iteration`` (and a cut last line goes)."""
        header, rows = self.read()
        if header:
            self.fields = header
            self._rewrite([r for r in rows if _up_to(r, iteration)], if_changed=True)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: Iterable[Mapping[str, Any]], if_changed: bool = False) -> None:
        """Write the header and ``rows``; ``if_changed``: leave a file that already holds exactly that alone."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.fields)
        for row in rows:
            writer.writerow([_format(row.get(k)) for k in self.fields])
        if if_changed and _holds(self.path, buffer.getvalue()):
            return
        atomic_write_text(self.path, buffer.getvalue())


class JsonlLog:
    """``tasks.jsonl``: one JSON object per line, appended."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        out = []
        for line in complete_lines(self.path):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate(self, iteration: int) -> None:
        kept = [r for r in self.read() if isinstance(r, dict) and _up_to(r, iteration)]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if (kept or self.path.exists()) and not _holds(self.path, text):
            atomic_write_text(self.path, text)


# -- the run ------------------------------------------------------------------------------------------------


def _config_text(config: Mapping[str, Any]) -> str:
    header = ("# metasgd-rl: the resolved config of this run (every default filled in).\n"
              "# Continue it with: metasgd-rl train --resume <this directory> [--set iterations=N]\n")
    return header + yaml_dump(config)


def _scalars(info: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of a train_step info dict (everything but the tasks), iteration first."""
    row: dict[str, Any] = {"iteration": int(info["iteration"])}
    for key, value in info.items():
        if key not in row and isinstance(value, (int, float, bool, np.number, np.bool_)):
            row[key] = value
    return row


class _RunLogger(BaseCallback):
    def __init__(self, run: Run):
        self.run = run

    def on_iteration_end(self, model: MetaSGD, info: dict[str, Any]) -> bool:
        self.run.log_iteration(info)
        return self.run.stopped_by is None


@contextlib.contextmanager
def _stop_on_signals(run: Run) -> Iterator[None]:
    """While training in the main thread: the first SIGINT (Ctrl-C) or SIGTERM sets ``run.stopped_by``, so that
    training stops after the current iteration and the run writes its checkpoint; a second one stops at once
    (``KeyboardInterrupt``), keeping the last checkpoint. Elsewhere (other threads) signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if run.stopped_by is not None:
            raise KeyboardInterrupt
        run.stopped_by = signum
        print(f"\nmetasgd-rl: {signal.Signals(signum).name}: stopping after iteration {run.model.iteration + 1} and "
              "saving a checkpoint (again to stop at once, keeping the last checkpoint)", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Run:
    """One training run in one directory. Make it with :meth:`create` or :meth:`resume`, then :meth:`train`."""

    def __init__(self, directory: Path, config: dict[str, Any], model: MetaSGD, resumed: bool = False,
                 has_checkpoint: bool = False):
        self.directory, self.config, self.model, self.resumed = Path(directory), config, model, resumed
        #: the signal (SIGINT, SIGTERM) that stopped training early, or None
        self.stopped_by: int | None = None
        self.metrics = CsvLog(self.directory / METRICS_FILE)
        self.tasks = JsonlLog(self.directory / TASKS_FILE)
        self._last_checkpoint: int | None = model.iteration if has_checkpoint else None
        self._writer: Any = None

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    @property
    def final_path(self) -> Path:
        return self.directory / FINAL_FILE

    @property
    def complete(self) -> bool:
        """Whether the run has nothing left to do: its checkpoint and ``final.pt`` are at ``iterations``
        (:meth:`train` then writes nothing)."""
        return (self.model.iteration >= self.config["iterations"] and self._last_checkpoint == self.model.iteration
                and self.final_path.is_file())

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, config: Mapping[str, Any]) -> Run:
        """A new run of a resolved config in ``config["run_dir"]`` (which must not exist or be empty).

        Everything is checked before the directory and its ``config.yaml`` are written.
        """
        config = dict(config)
        directory = Path(config["run_dir"])
        _check_new_run_dir(directory)
        check_config_memory(config)
        model = build_model(config)
        _create_run_dir(directory, _config_text(config))
        return cls(directory, config, model)

    @classmethod
    def resume(cls, directory: str | os.PathLike, sets: Iterable[str] = (),
               config_path: str | os.PathLike | None = None, allow_env_imports: bool = False) -> Run:
        """Continue the run in ``directory`` from its ``checkpoint.pt`` (from iteration 0 if there is none).

        ``config_path`` (optional) and ``sets`` may change only the
        :data:`~metasgd_rl.config.RESUME_MUTABLE` keys (``iterations``, ...); any other key they give must
        equal the run's. Everything is checked first (:class:`RunError` naming what is wrong, nothing changed): the
        checkpoint is intact (digest, no NaN or inf) and belongs to the run (its config equals ``config.yaml``), and
        the logs hold every iteration up to it (see :func:`_check_checkpoint`, :func:`_check_logs`); then stale
        temporary files of interrupted writes are removed, the logs are truncated to the checkpoint's iteration and
        ``config.yaml`` is updated. A run that
        is already :attr:`complete` is left as it is (nothing rewritten, ``config.yaml`` included).

        ``allow_env_imports``: a run whose ``family_kwargs`` give a module-qualified gymnasium id
        (``env_id="some.module:Env-v0"``) is refused unless this is True (CLI: ``--allow-env-imports``): the run
        directory is a file like a checkpoint, and building its family would import that module.
        """
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"--resume {str(directory)!r} is not allowed: it is a file, not a run directory; give "
                              f"the run directory (the folder that holds {CONFIG_FILE} and {CHECKPOINT_FILE})")
        if not directory.exists():
            meant = close_path(directory, directory=True)
            hint = f"; did you mean {meant!r}?" if meant else \
                "; give the directory of a run written by 'metasgd-rl train'"
            raise ConfigError(f"--resume {str(directory)!r} is not allowed: it does not exist{hint}")
        if not config_file.is_file():
            raise ConfigError(f"--resume {str(directory)!r} is not allowed: it has no {CONFIG_FILE}; use a run "
                              "directory written by 'metasgd-rl train'")
        _check_writable_run(directory)
        raw = read_yaml_file(config_file)
        imports = [] if allow_env_imports else module_env_ids(raw.get("family_kwargs"))
        if imports:
            raise ConfigError(env_import_message(imports[0], f"--resume {str(directory)!r}: its {CONFIG_FILE}",
                                                 "Run.resume(..., allow_env_imports=True)"))
        saved = resolve_config(with_legacy_defaults(raw, alpha=raw.get("algo", "metasgd") != "maml"))
        config = _resume_config(saved, directory, list(sets), config_path)
        has_checkpoint = _check_checkpoint(directory, config)
        model = _load_checkpoint(directory / CHECKPOINT_FILE, config, allow_env_imports) if has_checkpoint \
            else build_model(config)
        if model.iteration > config["iterations"]:
            raise ConfigError(f"iterations={config['iterations']} is not allowed: the checkpoint is at iteration "
                              f"{model.iteration}; use an integer >= {model.iteration}")
        _check_logs(directory, model.iteration, has_checkpoint, saved)
        run = cls(directory, config, model, resumed=True, has_checkpoint=has_checkpoint)
        try:
            run._remove_temporary_files()
            run.metrics.truncate(model.iteration)
            run.tasks.truncate(model.iteration)
            if any(config[k] != saved[k] for k in RESUME_MUTABLE) and not run.complete:
                atomic_write_text(config_file, _config_text(config))
        except OSError as err:
            raise RunError(f"cannot resume {directory}: writing {err.filename or 'its files'} failed "
                           f"({err.strerror or err}); make the run directory writable, or copy it to a writable "
                           "place and resume the copy") from err
        return run

    # -- training -----------------------------------------------------------------------------------------
    def train(self, callback: CallbackLike = None, summary: bool | None = None) -> MetaSGD:
        """Train until ``iterations``, logging every iteration and checkpointing as configured.

        ``summary``: print the one-line summary of the iterations trained (see :meth:`MetaSGD.learn`); by
        default only with the config's ``progress_bar``. ``metasgd-rl train`` passes True.

        Writes ``checkpoint.pt`` (and ``final.pt`` once all iterations are done) when training ends normally,
        including a stop asked for by ``callback`` and a first SIGINT (Ctrl-C) or SIGTERM, which stop after the
        current iteration (``stopped_by`` then holds the signal's number); after an exception, or a second
        signal, nothing more is written, and :meth:`resume` continues from the last checkpoint. A
        :attr:`complete` run is left untouched (no file rewritten, no TensorBoard events file added).
        """
        model = self.model
        if self.complete:
            return model
        remaining = self.config["iterations"] - model.iteration
        self._writer = self._open_writer() if remaining > 0 else None
        try:
            if remaining > 0:
                callbacks: list[Any] = [_RunLogger(self)] + ([callback] if callback is not None else [])
                with _stop_on_signals(self):
                    model.learn(remaining, callback=callbacks, progress_bar=self.config["progress_bar"],
                                summary=summary)
            if self._last_checkpoint != model.iteration:
                self.save_checkpoint()
            if model.iteration >= self.config["iterations"]:
                model.save(self.final_path)
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
        return model

    def log_iteration(self, info: Mapping[str, Any]) -> None:
        """Record one iteration (metrics row, tasks line, TensorBoard), evaluate and checkpoint when due."""
        row = _scalars(info)
        iteration = row["iteration"]
        every = self.config["eval_every"]
        if every and iteration % every == 0:
            row.update(self.evaluate())
        self.metrics.append(row)
        self.tasks.append({"iteration": iteration, "tasks": info.get("tasks", [])})
        if self._writer is not None:
            for key, value in row.items():
                if key != "iteration" and math.isfinite(float(value)):
                    self._writer.add_scalar(_TB_TAGS.get(key, key), float(value), iteration)
        if iteration % self.config["checkpoint_every"] == 0:
            self.save_checkpoint()

    def evaluate(self) -> dict[str, float]:
        """Mean return (and success rate, for a family with a success flag) on ``eval_tasks`` held-out tasks before
        and after the training number of inner steps.

        Tasks and rollouts come from a fixed seed derived from the run's seed, so successive evaluations
        differ only by θ and α, and a resumed run reproduces them.
        """
        seed = np.random.SeedSequence(self.config["seed"], spawn_key=(EVAL_STREAM,))
        result = evaluate_adaptation(self.model, n_tasks=self.config["eval_tasks"], steps=self.model.inner_steps,
                                     episodes=self.model.episodes_per_task, split="test", seed=seed)
        means = result.mean()
        row = {"eval/pre_return": float(means[0]), "eval/post_return": float(means[-1])}
        if result.success is not None:
            rates = result.success_mean()
            row.update({"eval/pre_success": float(rates[0]), "eval/post_success": float(rates[-1])})
        return row

    def save_checkpoint(self) -> Path:
        """Flush the logs to disk, then write ``checkpoint.pt`` atomically."""
        fsync_path(self.metrics.path)
        fsync_path(self.tasks.path)
        if self._writer is not None:
            self._writer.flush()
        path = self.model.save(self.checkpoint_path)
        self._last_checkpoint = self.model.iteration
        return path

    # -- helpers -------------------------------------------------------------------------------------------
    def _open_writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        purge = self.model.iteration + 1 if self.resumed else None
        return SummaryWriter(log_dir=str(self.directory), purge_step=purge)

    def _remove_temporary_files(self) -> None:
        for name in (CONFIG_FILE, METRICS_FILE, TASKS_FILE, CHECKPOINT_FILE, FINAL_FILE):
            for tmp in self.directory.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _check_new_run_dir(directory: Path) -> None:
    """Refuse (:class:`ConfigError`) a run directory that cannot hold a new run: a name too long for the file system,
    an existing file, a non-empty folder, a path under a file, a place without write permission, or any other error
    the file system gives while looking (a loop of links, ...)."""
    too_long = path_length_problem(directory)
    if too_long is not None:
        raise ConfigError(f"run_dir={str(directory)!r} is not allowed: {too_long}; use a shorter run_dir (--run-dir)")
    try:
        _check_run_dir_place(directory)
    except OSError as err:
        raise ConfigError(f"run_dir={str(directory)!r} is not allowed: it cannot be used ({err.strerror or err}); use "
                          "another run_dir (--run-dir DIR)") from err


def _check_run_dir_place(directory: Path) -> None:
    """The checks of :func:`_check_new_run_dir` on what is at ``directory`` and above it."""
    name = str(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"run_dir={name!r} is not allowed: it is a file; use a new directory path (--run-dir DIR)")
    if directory.is_dir() and any(p not in _interrupted_start(directory) for p in directory.iterdir()):
        if (directory / CONFIG_FILE).is_file():
            raise ConfigError(f"run_dir={name!r} is not allowed: it already holds a run; use a new run_dir "
                              f"(--run-dir) or continue that run with --resume {directory}")
        raise ConfigError(f"run_dir={name!r} is not allowed: it already exists and is not empty (and holds no run); "
                          "use a new or empty directory (--run-dir)")
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run_dir={name!r} is not allowed: {str(existing)!r} is a file, not a directory; use a "
                          "run_dir whose parent is a directory (--run-dir)")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == directory.absolute() else f"{str(existing)!r}"
        raise ConfigError(f"run_dir={name!r} is not allowed: {where} is not writable (permission denied); use a "
                          f"run_dir in a writable directory (--run-dir DIR)")


def _interrupted_start(directory: Path) -> list[Path]:
    """The temporary files a kill during the atomic write of a new run's ``config.yaml`` leaves behind: a folder
    holding only these held no run yet, and the same ``train`` command may start it again."""
    return list(directory.glob(f".{CONFIG_FILE}.*.tmp"))


def _create_run_dir(directory: Path, config_text: str) -> None:
    """Create ``directory`` and write its ``config.yaml``; an OS error becomes a :class:`RunError` (and a
    directory created here is removed again)."""
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in _interrupted_start(directory):
            stale.unlink()
        atomic_write_text(directory / CONFIG_FILE, config_text)
    except OSError as err:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise RunError(f"cannot create the run directory {directory}: {err.strerror or err}"
                       f"{f' ({err.filename})' if err.filename else ''}; use a run_dir in a writable directory "
                       "(--run-dir DIR)") from err


def _check_writable_run(directory: Path) -> None:
    """Refuse (:class:`ConfigError`) to resume a run whose directory or logs cannot be written: resuming truncates
    the logs, appends to them and replaces the checkpoint."""
    for path in (directory, directory / METRICS_FILE, directory / TASKS_FILE):
        if path.exists() and not os.access(path, os.W_OK):
            what = "the run directory" if path == directory else f"its {path.name}"
            raise ConfigError(f"--resume {str(directory)!r} is not allowed: {what} is not writable (permission "
                              f"denied), and resuming rewrites its logs and checkpoint; make it writable "
                              f"(chmod -R u+w {shlex.quote(str(directory))}) or copy the run directory to a writable "
                              "place and resume the copy")


def _resume_config(saved: dict[str, Any], directory: Path, sets: list[str],
                   config_path: str | os.PathLike | None) -> dict[str, Any]:
    """The run's config with the ``RESUME_MUTABLE`` values of ``config_path`` and ``sets`` (if given).

    Any other key that ``config_path`` or ``sets`` give a different value from the run's is refused: it
    would silently give a run that is neither the old one nor a fresh one.
    """
    if config_path is not None:
        given = load_config(config_path, sets, run_dir=saved["run_dir"])
        source = f" (from {os.fspath(config_path)!r}{' and --set' if sets else ''})"
    else:
        given = resolve_config(apply_overrides(saved, sets))
        source = " (from --set)"
    for key, value in given.items():
        if key not in RESUME_MUTABLE and key != "run_dir" and value != saved.get(key):
            raise ConfigError(f"{key}={value!r}{source} is not allowed with --resume: the run has "
                              f"{key}={saved.get(key)!r}; only {', '.join(RESUME_MUTABLE)} may change")
    return {**saved, **{k: given[k] for k in RESUME_MUTABLE}, "run_dir": str(directory)}


def _load_checkpoint(path: Path, config: Mapping[str, Any], allow_env_imports: bool = False) -> MetaSGD:
    try:
        # the sampler and the chunking may change on resume (same batches, same updates up to rounding);
        # everything else comes from the checkpoint
        model = MetaSGD.load(path, allow_env_imports=allow_env_imports,
                             **{k: config[k] for k in ("sampler", "ray_address", "ray_workers", "task_chunk_size",
                                                       "ray_startup_timeout", "max_envs")})
    except EnvImportError as err:
        raise ConfigError(str(err)) from err
    except Exception as err:  # a checkpoint is only ever replaced atomically: report, do not guess
        raise RunError(f"cannot load {path}: {type(err).__name__}: {err}") from err
    expected = model_class(config["algo"])
    if type(model) is not expected:
        raise RunError(f"{path} holds a {type(model).__name__} model but the run's algo is {config['algo']!r}")
    return model


# -- checks before a resume changes anything ------------------------------------------------------------------

#: the longest line a log may hold: a metrics row is a few kB, a tasks line rarely 100 kB; a longer one is damage
#: (and is not read into memory whole)
MAX_LOG_LINE = 8 * 2**20
#: the columns every ``metrics.csv`` has had from the start
_METRICS_COLUMNS = ("iteration", "loss", "pre_return", "post_return")
#: how many differing keys a refusal names
_SHOWN_DIFFERENCES = 3


def _check_checkpoint(directory: Path, config: Mapping[str, Any]) -> bool:
    """Whether the run in ``directory`` has a ``checkpoint.pt`` to continue from. One that is there but unusable is
    refused (:class:`RunError`) rather than skipped, which would restart the run from iteration 0: not a file, not
    readable, damaged (digest, NaN or inf anywhere, optimiser states included), or from another run (its class or
    config differ from ``config``, as after copying a checkpoint in or editing ``config.yaml``). The message names
    ``final.pt`` when that one is intact and belongs to the run."""
    path = directory / CHECKPOINT_FILE
    if not path.exists() and not path.is_symlink():
        return False
    _, problem = _inspect_checkpoint(path, config)
    if problem is not None:
        raise RunError(f"cannot resume {directory}: {problem}; {_final_advice(directory, config, problem)} "
                       "(nothing was changed)")
    return True


def _inspect_checkpoint(path: Path, config: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)`` for a checkpoint file that is intact and belongs to the run of ``config``, else
    ``(None, what is wrong)``."""
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "a broken link" if path.is_symlink() else "not a regular file"
        return None, f"its {path.name} is {kind}, not a checkpoint file"
    try:
        state, saved = checked_checkpoint(path)
        verify_digest(path, state)
    except CheckpointError as err:
        return None, str(err)
    except OSError as err:
        return None, f"its {path.name} cannot be read ({err.strerror or err})"
    differences = _config_differences(config, state, saved)
    if differences:
        more = len(differences) - _SHOWN_DIFFERENCES
        named = ", ".join(differences[:_SHOWN_DIFFERENCES]) + (f" and {more} more" if more > 0 else "")
        return None, (f"its {path.name} does not belong to this run: it differs from {CONFIG_FILE} in {named}, so it "
                      f"comes from another run or {CONFIG_FILE} was edited after the run started")
    return state, None


def _final_advice(directory: Path, config: Mapping[str, Any], problem: str) -> str:
    """What to do about an unusable ``checkpoint.pt`` (``problem``): continue from ``final.pt`` if it is intact and
    belongs to the run, else restore the run's own files. Nothing is deleted or copied here."""
    final = directory / FINAL_FILE
    state, _ = _inspect_checkpoint(final, config) if final.is_file() else (None, None)
    if state is not None:
        return (f"its {FINAL_FILE} (iteration {state['iteration']}) is intact and belongs to the run: to continue "
                f"from it, move {CHECKPOINT_FILE} aside and copy {FINAL_FILE} to {CHECKPOINT_FILE}")
    if "does not belong to this run" in problem:
        return f"put back the run's own {CHECKPOINT_FILE} or {CONFIG_FILE}, or start a new run"
    return f"it has no intact {FINAL_FILE} to continue from either: restore {CHECKPOINT_FILE} or start a new run"


def _config_differences(config: Mapping[str, Any], state: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """How a checkpoint (``state``, its JSON config ``saved``) differs from the run's resolved ``config``, one
    ``"seed (config.yaml 0, checkpoint 1)"`` per key (nested keys dotted). The resume-mutable keys and MAML's fixed
    ones are not compared; a key a checkpoint from before it existed lacks counts as its legacy value
    (:func:`~metasgd_rl.model.with_legacy_defaults`) or the constructor's default, as loading it would."""
    out = []
    expected = model_class(config["algo"]).__name__
    if state.get("class") != expected:
        out.append(f"algo ({CONFIG_FILE} {config['algo']!r}, checkpoint a {state.get('class')} model)")
    theirs = with_legacy_defaults(saved, alpha=config["algo"] != "maml")
    defaults = constructor_defaults()
    for key, ours in model_kwargs(config).items():
        if key in RESUME_MUTABLE:
            continue
        other = theirs.get(key, defaults.get(key))
        if isinstance(ours, Mapping) and isinstance(other, Mapping):
            base = _nested_defaults(key, config)
            pairs = [(f"{key}.{k}", ours.get(k, base.get(k)), other.get(k, base.get(k))) for k in {**ours, **other}]
        else:
            pairs = [(key, ours, other)]
        out += [f"{name} ({CONFIG_FILE} {_short(a)}, checkpoint {_short(b)})" for name, a, b in pairs
                if _plain(a) != _plain(b)]
    return out


def _nested_defaults(key: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults a nested config section's missing keys take (policy_kwargs, outer_kwargs; none for others)."""
    if key == "policy_kwargs":
        return dict(DEFAULT_POLICY_KWARGS)
    if key == "outer_kwargs":
        from metasgd_rl.outer import OUTER_OPTIMIZERS

        return dict(getattr(OUTER_OPTIMIZERS.get(config.get("outer")), "DEFAULTS", {}))
    return {}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (YAML, JSON and Python spell a sequence differently)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _short(value: Any, limit: int = 60) -> str:
    return short_repr(_plain(value), limit)


def _check_logs(directory: Path, iteration: int, has_checkpoint: bool, saved: Mapping[str, Any]) -> None:
    """Refuse (:class:`RunError`) to resume when truncating the logs to ``iteration`` would lose rows or restart the
    run: ``metrics.csv`` and ``tasks.jsonl`` (each optional) must be regular UTF-8 files with sane lines, the
    expected header, and iterations that follow each other up to at least ``iteration`` (a log begun by a resume of
    a run directory without it may start later); without a checkpoint, the logs must not reach past the first one
    (``checkpoint_every`` of ``saved``), nor may ``final.pt`` exist."""
    logs = ((METRICS_FILE, _metrics_iterations), (TASKS_FILE, _tasks_iterations))
    logged = 0
    for name, read in logs:
        path = directory / name
        try:
            iterations = read(path)
            _check_sequence(name, iterations, iteration)
        except _DamagedLog as err:
            raise RunError(f"cannot resume {directory}: {err}; resuming rewrites {name} and would lose its rows: "
                           "repair it, or move it aside to continue without them (nothing was changed)") from None
        logged = max(logged, iterations[-1] if iterations else 0)
    every = min(saved["checkpoint_every"], saved["iterations"])
    final = directory / FINAL_FILE
    if not has_checkpoint and (final.exists() or logged > every):
        why = f"it has {FINAL_FILE}" if final.exists() else \
            f"its logs reach iteration {logged} and a checkpoint is written every {every}"
        problem = f"it has no {CHECKPOINT_FILE} although {why}"
        raise RunError(f"cannot resume {directory}: {problem}, and resuming would start again from iteration 0 and "
                       f"drop the logged iterations; {_final_advice(directory, saved, problem)} (nothing was changed)")


class _DamagedLog(Exception):
    """A log that resuming would lose rows of (the message says where and what)."""


def _log_lines(path: Path) -> list[str]:
    """The complete lines of the log ``path`` ([] if it is missing); a last line cut by a kill is dropped."""
    if not path.exists() and not path.is_symlink():
        return []
    if not path.is_file():
        raise _DamagedLog(f"its {path.name} is {'a directory' if path.is_dir() else 'not a regular file'}")
    lines = []
    try:
        with open(path, "rb") as f:
            while line := f.readline(MAX_LOG_LINE + 1):
                if len(line) > MAX_LOG_LINE:
                    raise _DamagedLog(f"line {len(lines) + 1} of its {path.name} is over {MAX_LOG_LINE >> 20} MiB long")
                if not line.endswith(b"\n"):
                    break
                try:
                    lines.append(line.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _DamagedLog(f"line {len(lines) + 1} of its {path.name} is not UTF-8 text") from None
    except OSError as err:
        raise _DamagedLog(f"its {path.name} cannot be read ({err.strerror or err})") from None
    return lines


def _metrics_iterations(path: Path) -> list[int]:
    """The iterations of ``metrics.csv``'s rows, in file order, after checking its header and each row's width."""
    lines = _log_lines(path)
    try:
        rows = list(csv.reader(lines))
    except csv.Error as err:
        raise _DamagedLog(f"its {path.name} is not valid CSV ({err})") from None
    if not rows:
        return []
    header = rows[0]
    missing = [c for c in _METRICS_COLUMNS if c not in header]
    if header[:1] != ["iteration"] or missing or len(set(header)) != len(header) or "" in header:
        raise _DamagedLog(f"the header of its {path.name} is damaged ({_short(','.join(header))}): it must start with "
                          f"'iteration', hold {', '.join(_METRICS_COLUMNS[1:])} and name each column once")
    iterations = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise _DamagedLog(f"line {number} of its {path.name} has {len(row)} fields but its header {len(header)}")
        iterations.append(_iteration_at(row[0], number, path))
    return iterations


def _tasks_iterations(path: Path) -> list[int]:
    """The iterations of ``tasks.jsonl``'s lines, in file order, after checking that each is a JSON record."""
    iterations = []
    for number, line in enumerate(_log_lines(path), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "iteration" not in record:
            raise _DamagedLog(f"line {number} of its {path.name} is not a JSON record of an iteration's tasks")
        iterations.append(_iteration_at(record["iteration"], number, path))
    return iterations


def _iteration_at(value: Any, number: int, path: Path) -> int:
    """``value`` (line ``number`` of ``path``) as an iteration number, or :class:`_DamagedLog`."""
    try:
        iteration = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        iteration = None
    if iteration is None or iteration < 1:
        raise _DamagedLog(f"line {number} of its {path.name} has iteration {_short(value)}, not a positive integer")
    return iteration


def _check_sequence(name: str, iterations: list[int], checkpoint: int) -> None:
    """Refuse a log whose iterations do not follow each other, or stop before the checkpoint's ``checkpoint``."""
    for previous, current in zip(iterations, iterations[1:], strict=False):
        if current != previous + 1:
            raise _DamagedLog(f"its {name} goes from iteration {previous} to {current}")
    if iterations and iterations[0] <= checkpoint and iterations[-1] < checkpoint:
        raise _DamagedLog(f"its {name} ends at iteration {iterations[-1]}, before the checkpoint's {checkpoint}")
