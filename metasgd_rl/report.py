"""Evaluation reports: a folder with ``report.md``, ``results.json`` and PNG plots.

:func:`write_report` is the library function: give it evaluated results (method name -> :class:`AdaptationResult`,
from :func:`~metasgd_rl.evaluation.evaluate_adaptation` or computed elsewhere, e.g. a baseline), optionally the
run directories whose ``metrics.csv`` give learning curves and the models whose α and trajectories to show, and
the command that produced it. :func:`evaluate_runs` loads run directories and evaluates them all on the same
held-out tasks and seeds; ``metasgd-rl compare`` is the two in a row::

    results, runs, models = evaluate_runs(["runs/a", "runs/b"], n_tasks=40, steps=3, episodes=20, seed=0)
    results["PPO from scratch"] = my_baseline_result     # any AdaptationResult on the same tasks
    write_report("reports/ab", results, runs, models, command="python my_script.py")

What it draws:

- adaptation curves: mean return over tasks vs inner step 0..K with 95% Student-t confidence bands, one line
  per method (``adaptation.png``) and the same numbers as a markdown table;
- the comparison: each method minus the first MAML result (else the first result), paired over the tasks they
  share, after each step: mean difference ± 95% t-interval and the paired t-test's p-value (also in
  ``results.json`` under ``comparison``);
- meta-training learning curves from each run's ``metrics.csv``: pre- and post-adaptation return on the
  training tasks vs iteration, and the held-out evaluation columns (``eval/*``) where logged
  (``learning_curves.png``);
- for each model: the α probe (:mod:`metasgd_rl.probe`: the return after one step with the learned α, with
  the hidden layers' α reset to α_init and set to 0);
- for each Meta-SGD model with learned α: per tensor, a histogram of α's values, the fraction of negative
  entries, the mean and the mean |α − α_init| (``alpha-<method>.png`` and a table); a model with a fixed α
  (MAML) gets a sentence saying so instead;
- for Navigation2D families: trajectories on a few of the evaluated held-out tasks before and after
  adaptation, start and goal marked (``trajectories-<method>.png``).

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global state). Every file is written
atomically: rendered to memory, then a temporary file in the same folder renamed over the target.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metasgd_rl.evaluation import (
    AdaptationResult,
    adaptation_rollouts,
    evaluate_adaptation,
    evaluation_tasks,
    seed_from_json,
)
from metasgd_rl.io import atomic_write_bytes, atomic_write_text, close_path, unwritable_reason
from metasgd_rl.probe import alpha_probe, hidden_layer_names
from metasgd_rl.stats import PairedTest, paired_test
from metasgd_rl.step_sizes import alpha_key
from metasgd_rl.tables import aligned_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from metasgd_rl.model import MetaSGD

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
RESULTS_FORMAT = "metasgd-rl/results/1"
ADAPTATION_PNG = "adaptation.png"
LEARNING_PNG = "learning_curves.png"
#: held-out tasks whose trajectories are drawn, and episodes per task and panel
TRAJECTORY_TASKS = 4
TRAJECTORY_EPISODES = 3


class ComparisonError(ValueError):
    """Bad input to :func:`evaluate_runs` (one line naming the argument, its value and what is allowed)."""


# -- loading and evaluating runs --------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, name: str = "CHECKPOINT", allow_env_imports: bool = False,
                    max_envs: int | None = None) -> MetaSGD:
    """``MetaSGD.load(path, allow_env_imports=...)``, with a :class:`ComparisonError` naming ``path`` if it is
    missing or not loadable; ``max_envs`` (if given) replaces the saved bound on sub-envs per rollout."""
    import pickle

    from metasgd_rl.model import CheckpointError, EnvImportError, MetaSGD

    try:
        overrides = {} if max_envs is None else {"max_envs": max_envs}
        return MetaSGD.load(path, allow_env_imports=allow_env_imports, **overrides)
    except (EnvImportError, CheckpointError) as err:  # their messages name the file and what is wrong
        raise ComparisonError(f"{name}={os.fspath(path)!r} is not allowed: {err}") from err
    except FileNotFoundError as err:
        raise ComparisonError(f"{name}={os.fspath(path)!r} is not allowed: {_missing_file(path)}") from err
    except IsADirectoryError as err:
        raise ComparisonError(f"{name}={os.fspath(path)!r} is not allowed: {_directory_advice(path)}") from err
    except (ValueError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError, OSError) as err:
        raise ComparisonError(f"{name}={os.fspath(path)!r} is not allowed: it is not a loadable metasgd-rl "
                              f"checkpoint ({type(err).__name__}: {err})") from err


def _missing_file(path: str | os.PathLike) -> str:
    """Why a checkpoint ``path`` that does not exist is refused, with the file it likely means (a typo in its name
    or folders: ``runs/x/fnal.pt`` gives ``runs/x/final.pt``)."""
    meant = close_path(path, directory=False)
    if meant is not None:
        return f"no such file; did you mean {meant!r}?"
    folder = Path(path).parent
    return "no such file" if folder.is_dir() else f"no such file (no folder {os.fspath(folder)!r} either)"


def _directory_advice(path: str | os.PathLike) -> str:
    """Why a directory given as a checkpoint is refused: its own checkpoint file to give instead, for a run
    directory, or what a checkpoint file is."""
    try:
        return f"it is a directory; did you mean its checkpoint {os.fspath(run_checkpoint(path))!r}?"
    except ComparisonError:
        return "it is a directory; give a checkpoint file (a run directory's final.pt or checkpoint.pt)"


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """A run directory's ``final.pt``, or its ``checkpoint.pt`` if training has not finished."""
    from metasgd_rl.run import CHECKPOINT_FILE, FINAL_FILE

    directory = Path(run_dir)
    if not directory.is_dir():
        meant = None if directory.exists() else close_path(directory, directory=True)
        hint = f"; did you mean {meant!r}?" if meant else ""
        raise ComparisonError(f"RUN_DIR={os.fspath(run_dir)!r} is not allowed: no such directory{hint}")
    for name in (FINAL_FILE, CHECKPOINT_FILE):
        if (directory / name).is_file():
            return directory / name
    raise ComparisonError(f"RUN_DIR={os.fspath(run_dir)!r} is not allowed: it has no {FINAL_FILE} or "
                          f"{CHECKPOINT_FILE}; use a run directory written by 'metasgd-rl train'")


#: how reports name the model classes
METHOD_NAMES = {"MetaSGD": "Meta-SGD", "MAML": "MAML"}


def method_label(model: MetaSGD, detail: str | None = None) -> str:
    """``"Meta-SGD (seed 0)"``: the model's method and seed (and ``detail`` after the seed, if given)."""
    method = METHOD_NAMES.get(type(model).__name__, type(model).__name__)
    return f"{method} (seed {model.seed}{'' if detail is None else f', {detail}'})"


def run_labels(run_dirs: Sequence[str | os.PathLike], models: Sequence[MetaSGD] | None = None) -> list[str]:
    """Each run's label: with ``models`` (the runs' models), the method and seed (:func:`method_label`, e.g.
    ``"Meta-SGD (seed 0)"``), with the directory name added where two runs share both
    (``"Meta-SGD (seed 0, run-a)"``); without, the directory name. The path as given replaces a directory name
    that two runs share."""
    names = [Path(d).resolve().name or os.fspath(d) for d in run_dirs]
    names = [n if names.count(n) == 1 else os.fspath(d) for n, d in zip(names, run_dirs, strict=True)]
    labels = names
    if models is not None:
        methods = [method_label(m) for m in models]
        labels = [label if methods.count(label) == 1 else method_label(m, n)
                  for label, m, n in zip(methods, models, names, strict=True)]
    if len(set(labels)) != len(labels):
        duplicate = next(label for label in labels if labels.count(label) > 1)
        raise ComparisonError(f"RUN_DIR={duplicate!r} is not allowed twice; give each run once")
    return labels


def _family_key(model: MetaSGD) -> tuple[Any, str]:
    return model.family.id, json.dumps(model.family.make_kwargs, sort_keys=True, default=str)


def _family_name(model: MetaSGD) -> str:
    family_id, kwargs = _family_key(model)
    return f"{family_id}" + ("" if kwargs == "{}" else f" {kwargs}")


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    n_tasks: int = 40,
    steps: int = 3,
    episodes: int = 20,
    seed: int = 0,
    split: str = "test",
    allow_env_imports: bool = False,
    max_envs: int | None = None,
) -> tuple[dict[str, AdaptationResult], dict[str, Path], dict[str, MetaSGD]]:
    """Load each run's model (:func:`run_checkpoint`) and evaluate all on the same tasks and rollout seeds.

    The ``n_tasks`` tasks are sampled once, from the first model's family with ``seed``; every model is then
    evaluated on them with the same ``seed`` (so the same environment seeds). Runs of different task families
    (id or family kwargs) are refused. Returns ``(results, runs, models)`` keyed by run label
    (:func:`run_labels`: method and seed, e.g. ``"Meta-SGD (seed 0)"``), ready for :func:`write_report`. Each
    model's family releases its pooled environments after its evaluation, so memory holds one run's environments
    at a time. ``allow_env_imports``: see
    :meth:`MetaSGD.load <metasgd_rl.MetaSGD.load>` (checkpoints naming a module-qualified ``env_id`` are refused
    without it). ``max_envs`` (if given) bounds every model's rollouts (see :func:`load_checkpoint`).
    """
    if not run_dirs:
        raise ComparisonError("RUN_DIR is missing; give at least one run directory")
    run_labels(run_dirs)  # refuses a run given twice before anything is loaded
    checkpoints = [run_checkpoint(d) for d in run_dirs]
    loaded = [load_checkpoint(path, "RUN_DIR", allow_env_imports, max_envs) for path in checkpoints]
    labels = run_labels(run_dirs, loaded)
    models = dict(zip(labels, loaded, strict=True))
    first_label, first = next(iter(models.items()))
    for model, run_dir in zip(models.values(), run_dirs, strict=True):
        if _family_key(model) != _family_key(first):
            raise ComparisonError(f"RUN_DIR={os.fspath(run_dir)!r} is not allowed: its family is "
                                  f"{_family_name(model)} but {first_label!r} has {_family_name(first)}; "
                                  "compare needs runs of one task family")
    tasks = evaluation_tasks(first, n_tasks, split, seed)
    results = {}
    for label, model in models.items():
        results[label] = evaluate_adaptation(model, steps=steps, episodes=episodes, split=split, seed=seed,
                                             tasks=tasks, method=label)
        # release the environments this model's family keeps for reuse (Meta-World's take ~20 MB each):
        # one family's envs at a time, not every run's
        getattr(model.family, "close", lambda: None)()
    runs = {label: Path(d) for label, d in zip(labels, run_dirs, strict=True)}
    return results, runs, models


# -- small helpers --------------------------------------------------------------------------------------------


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "method"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8) -> tuple[Figure, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (temporary file in the folder + rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _save_grid(fig: Figure, axes: np.ndarray, used: int, title: str, path: str | os.PathLike) -> Path:
    """Hide the grid's panels after the first ``used``, add the title, save."""
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _step_header(k: int) -> str:
    return "before adaptation" if k == 0 else f"after {k} step" + ("s" if k > 1 else "")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- adaptation curves ------------------------------------------------------------------------------------------


def adaptation_table(results: Mapping[str, AdaptationResult], digits: int = 2, success: bool = False) -> str:
    """Markdown table: one row per method, mean return ± 95% CI after 0..K inner steps (``success=True``: the
    success rate instead, for the results that record one)."""
    steps = max(r.steps for r in results.values())
    rows = []
    for name, result in results.items():
        if success and result.success is None:
            continue
        mean, ci = (result.success_mean(), result.success_ci95()) if success else (result.mean(), result.ci95())
        cells = [f"{_fmt(mean[k], digits)} ± {_fmt(ci[k], digits)}" if k <= result.steps else "–"
                 for k in range(steps + 1)]
        rows.append([name, *cells])
    return _md_table(["method", *(_step_header(k) for k in range(steps + 1))], rows)


# -- paired differences -----------------------------------------------------------------------------------------


def comparison_reference(results: Mapping[str, AdaptationResult]) -> str:
    """The method the others are compared with: the first MAML result (named ``"MAML"`` or ``"MAML (...)"``, as
    :func:`method_label` names MAML runs), else the first result."""
    maml = METHOD_NAMES["MAML"]
    return next((name for name in results if name == maml or name.startswith(f"{maml} ")), next(iter(results)))


def paired_differences(results: Mapping[str, AdaptationResult], reference: str | None = None
                       ) -> dict[str, list[PairedTest]]:
    """Each method minus ``reference`` (default :func:`comparison_reference`), paired over tasks, per step.

    ``{name: [paired_test(result.returns[:, k], reference.returns[:, k]) for k = 0..K]}`` with K the fewer of
    the two results' steps. Only results evaluated on exactly the reference's tasks (in the same order) are
    paired; the others, and the reference itself, are left out.
    """
    reference = comparison_reference(results) if reference is None else reference
    base = results[reference]
    return {name: [paired_test(result.returns[:, k], base.returns[:, k])
                   for k in range(min(result.steps, base.steps) + 1)]
            for name, result in results.items() if name != reference and result.tasks == base.tasks}


def _fmt_p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_difference(test: PairedTest, digits: int = 2) -> str:
    """``"+3.70 ± 3.10 (p 0.020)"``: the mean paired difference, its 95% half-width and the paired t-test's p."""
    return f"{test.difference:+.{digits}f} ± {_fmt(test.ci95, digits)} (p {_fmt_p(test.p_value)})"


def difference_table(results: Mapping[str, AdaptationResult], reference: str | None = None,
                     digits: int = 2) -> str | None:
    """Markdown table (columns aligned, also for a terminal): one row per method, its difference from
    ``reference`` after 0..K steps as :func:`paired_differences` computes it; None when no method pairs with it."""
    reference = comparison_reference(results) if reference is None else reference
    differences = paired_differences(results, reference)
    if not differences:
        return None
    steps = max(len(tests) for tests in differences.values())
    rows = [[f"{name} − {reference}", *(_fmt_difference(tests[k], digits) if k < len(tests) else "–"
                                        for k in range(steps))]
            for name, tests in differences.items()]
    return aligned_table(["difference", *(_step_header(k) for k in range(steps))], rows)


def difference_lines(results: Mapping[str, AdaptationResult], reference: str | None = None) -> list[str]:
    """The report's lines on the paired differences (none when no method pairs with the reference)."""
    reference = comparison_reference(results) if reference is None else reference
    table = difference_table(results, reference)
    if table is None:
        return []
    n_tasks = results[reference].n_tasks
    unpaired = [name for name, r in results.items() if name != reference and r.tasks != results[reference].tasks]
    lines = [f"Each method minus {reference}, paired over the same {n_tasks} tasks: the mean of the per-task "
             "differences ± the half-width of its 95% Student-t interval, and the two-sided p-value of the paired "
             "t-test of no difference (not corrected for the number of comparisons).", "", table, ""]
    if unpaired:
        lines += [f"Not paired (evaluated on other tasks than {reference}): {', '.join(unpaired)}.", ""]
    return lines


def comparison_to_json(results: Mapping[str, AdaptationResult], reference: str | None = None
                       ) -> dict[str, Any] | None:
    """:func:`paired_differences` as JSON-able data (non-finite numbers as null), None when nothing pairs."""
    reference = comparison_reference(results) if reference is None else reference
    differences = paired_differences(results, reference)
    if not differences:
        return None
    return {"reference": reference, "test": "paired t-test over tasks, two-sided; ci95: half-width of the 95% "
            "t-interval of the mean difference (method minus reference)",
            "differences": {name: [{"step": k, **{key: _finite_or_null(value) for key, value in asdict(t).items()}}
                                   for k, t in enumerate(tests)]
                            for name, tests in differences.items()}}


def _finite_or_null(x: float) -> float | None:
    return x if math.isfinite(x) else None


def has_success(results: Mapping[str, AdaptationResult]) -> bool:
    """Whether any result records success (a family with a success flag, e.g. Meta-World)."""
    return any(r.success is not None for r in results.values())


def plot_adaptation_curves(results: Mapping[str, AdaptationResult], path: str | os.PathLike) -> Path:
    """Mean return vs inner step with 95% confidence bands, one line per method; beside it the success rate
    for results that record one."""
    panels = [("mean return", lambda r: (r.mean(), r.ci95()))]
    if has_success(results):
        panels.append(("success rate", lambda r: (r.success_mean(), r.success_ci95())))
    fig, axes = _figure(ncols=len(panels), width=6.0, height=4.2)
    n_tasks = sorted({r.n_tasks for r in results.values()})
    splits = sorted({r.split for r in results.values()})
    k_max = max(r.steps for r in results.values())
    for ax, (ylabel, values) in zip(axes[0], panels, strict=True):
        for name, result in results.items():
            mean, ci = values(result)
            if mean is None:
                continue
            ci = np.nan_to_num(ci, nan=0.0)
            steps = np.arange(result.steps + 1)
            line, = ax.plot(steps, mean, marker="o", label=name)
            ax.fill_between(steps, mean - ci, mean + ci, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(xlabel="inner steps", ylabel=ylabel, xticks=list(range(k_max + 1)),
               title=f"Fast adaptation: {'/'.join(map(str, n_tasks))} {'/'.join(splits)} tasks, 95% CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_png(fig, path)


# -- learning curves ------------------------------------------------------------------------------------------


#: the longest line read from a ``metrics.csv`` (a row is a few kB); a longer one is damage, and is not read whole
MAX_METRICS_LINE = 8 * 2**20


def _metrics_lines(path: Path) -> Iterator[str]:
    """The lines of a ``metrics.csv``, each read no further than :data:`MAX_METRICS_LINE` bytes;
    :class:`ComparisonError` for a file that is a directory, cannot be read, is not UTF-8 or has a longer line
    (``FileNotFoundError`` for a missing one, as the caller notes it)."""
    damaged = f"{path} cannot be read for the learning curves"
    advice = "repair it or move it aside, and run the command again"
    if path.is_dir():
        raise ComparisonError(f"{damaged}: it is a directory, not a file; {advice}")
    try:
        with open(path, "rb") as f:
            number = 0
            while line := f.readline(MAX_METRICS_LINE + 1):
                number += 1
                if len(line) > MAX_METRICS_LINE:
                    raise ComparisonError(f"{damaged}: line {number} is over {MAX_METRICS_LINE >> 20} MiB long; "
                                          f"{advice}")
                try:
                    yield line.decode("utf-8")
                except UnicodeDecodeError:
                    raise ComparisonError(f"{damaged}: line {number} is not UTF-8 text; {advice}") from None
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ComparisonError(f"{damaged} ({err.strerror or err}); {advice}") from err


def read_metrics(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``metrics.csv`` of a run directory (or the file itself) as float columns; empty cells and cells that are not
    numbers are NaN. A missing file is a ``FileNotFoundError``; one that is there but cannot be read as CSV text (a
    directory, binary, a line of megabytes) a :class:`ComparisonError` naming it."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.csv"
    try:
        rows = list(csv.DictReader(_metrics_lines(path)))
    except csv.Error as err:
        raise ComparisonError(f"{path} cannot be read for the learning curves: it is not valid CSV ({err}); repair it "
                              "or move it aside, and run the command again") from err
    columns: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else []):
        if key is None:  # the cells of a row longer than the header
            continue
        values = []
        for row in rows:
            try:
                values.append(float(row.get(key) or "nan"))
            except (TypeError, ValueError):
                values.append(math.nan)
        columns[key] = np.array(values, dtype=np.float64)
    return columns


def check_metrics(run_dir: str | os.PathLike) -> None:
    """Refuse (:class:`ComparisonError`) a run directory whose ``metrics.csv`` is there but cannot be read
    (:func:`read_metrics`): called before evaluating, so that a report is not refused after the work. A missing file
    passes (the report notes it)."""
    if not Path(run_dir).is_dir():
        return
    try:
        read_metrics(run_dir)
    except FileNotFoundError:
        pass


def _has(columns: Mapping[str, np.ndarray], key: str) -> bool:
    return key in columns and bool(np.isfinite(columns[key]).any())


def plot_learning_curves(metrics: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike) -> Path:
    """Pre- (dashed) and post-adaptation (solid) return vs meta-iteration: training tasks, and held-out
    evaluation where any run logged ``eval/pre_return`` / ``eval/post_return``."""
    from matplotlib.ticker import MaxNLocator

    with_eval = any(_has(c, "eval/post_return") or _has(c, "eval/pre_return") for c in metrics.values())
    fig, axes = _figure(ncols=2 if with_eval else 1, width=5.5, height=4.0)
    panels = [(axes[0, 0], "", "training tasks (this iteration's batch)")]
    if with_eval:
        panels.append((axes[0, 1], "eval/", "held-out tasks (eval_every)"))
    colors = [f"C{i % 10}" for i in range(len(metrics))]
    for ax, prefix, title in panels:
        for (name, columns), color in zip(metrics.items(), colors, strict=True):
            iteration = columns.get("iteration", np.arange(1, 1 + len(next(iter(columns.values()), []))))
            for key, style, what in ((f"{prefix}pre_return", "--", "pre"), (f"{prefix}post_return", "-", "post")):
                if _has(columns, key):
                    ok = np.isfinite(columns[key])
                    ax.plot(iteration[ok], columns[key][ok], style, color=color, label=f"{name} ({what})",
                            marker="o" if prefix and ok.sum() < 30 else None, markersize=3)
        ax.set(xlabel="meta-iteration", ylabel="mean return", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return save_png(fig, path)


def learning_table(metrics: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Markdown table: iterations and the last logged pre/post returns (training and held-out) per run."""
    def last(columns: Mapping[str, np.ndarray], key: str) -> str:
        if not _has(columns, key):
            return "–"
        return _fmt(float(columns[key][np.isfinite(columns[key])][-1]))

    keys = ["pre_return", "post_return", "eval/pre_return", "eval/post_return"]
    header = ["run", "iterations", "last pre-adaptation", "last post-adaptation", "last held-out pre",
              "last held-out post"]
    if any(_has(columns, "post_success") for columns in metrics.values()):
        keys += ["post_success", "eval/post_success"]
        header += ["last post-adaptation success", "last held-out post success"]
    rows = []
    for name, columns in metrics.items():
        iterations = columns.get("iteration", np.array([]))
        rows.append([name, str(int(np.nanmax(iterations))) if _has(columns, "iteration") else "0",
                     *(last(columns, k) for k in keys)])
    return _md_table(header, rows)


# -- step sizes α ---------------------------------------------------------------------------------------------


def alpha_values(model: MetaSGD) -> dict[str, np.ndarray]:
    """α's values per parameter tensor, ``[num_steps, ...]``; a scalar α shared by all is ``"all"``.

    With ``alpha_granularity="tensor"`` each tensor has one value per step, ``"element"`` one per entry of θ.
    """
    sizes = model.step_sizes
    names = ["all"] if sizes.granularity == "scalar" else list(sizes.names)
    values = sizes.values()  # α itself, also under alpha_parameterization="log"
    out = {}
    for name in names:
        key = "all" if name == "all" else alpha_key(name)
        out[name] = values[key].detach().cpu().double().numpy()
    return out


def alpha_statistics(model: MetaSGD) -> list[dict[str, Any]]:
    """Per tensor (and inner step, with ``alpha_per_step``): size, mean, std, min, max, the fraction of
    negative entries and the mean |α − α_init| (``α_init`` from the model's config)."""
    # α is stored in the parameters' dtype: compare with α_init in that dtype (an untouched α changes by 0)
    values_by_tensor = alpha_values(model)
    dtype = next(iter(model.step_sizes.alphas.values())).detach().cpu().numpy().dtype
    alpha_init = float(np.asarray(model.config["alpha_init"], dtype=dtype))
    stats = []
    for name, values in values_by_tensor.items():
        for step in range(values.shape[0]):
            v = values[step].ravel()
            stats.append({
                "tensor": name, "step": step, "size": int(v.size),
                "theta_size": int(sum(math.prod(s) for s in model.step_sizes.shapes.values())) if name == "all"
                else int(math.prod(model.step_sizes.shapes[name])),
                "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
                "negative": float((v < 0).mean()), "mean_abs_change": float(np.abs(v - alpha_init).mean()),
            })
    return stats


def _probe_lines(model: MetaSGD, result: AdaptationResult) -> list[str]:
    """The α probe on ``result``'s tasks, episodes and seed, as report lines (none without hidden layers)."""
    if not hidden_layer_names(model):
        return []
    seed = seed_from_json(result.seed)
    probe = alpha_probe(model, episodes=result.episodes or model.episodes_per_task, split=result.split,
                        seed=0 if seed is None else seed, tasks=result.tasks)
    return ["Does the adaptation use the hidden layers' α? The return after one step on the same tasks and "
            "episodes with the learned α, with the hidden layers' α reset to α_init, and with them set to 0 "
            "(mean over tasks ± 95% t-interval; the differences are paired over tasks):", "", probe.table(), ""]


def alpha_is_fixed(model: MetaSGD) -> bool:
    return not model.step_sizes.learnable


def alpha_table(model: MetaSGD) -> str:
    per_step = model.step_sizes.num_steps > 1
    rows = []
    for s in alpha_statistics(model):
        rows.append([s["tensor"], *([str(s["step"])] if per_step else []), f"{s['size']} / {s['theta_size']}",
                     f"{s['mean']:.4g}", f"{s['std']:.3g}", f"{s['min']:.4g}", f"{s['max']:.4g}",
                     f"{100 * s['negative']:.1f}%", f"{s['mean_abs_change']:.4g}"])
    header = ["tensor", *(["step"] if per_step else []), "α entries / θ entries", "mean α", "std", "min", "max",
              "negative", "mean \\|α − α_init\\|"]
    return _md_table(header, rows)


#: the fewest bins of a histogram of spread α
MIN_ALPHA_BINS = 20


def alpha_histogram_range(values: np.ndarray, max_bins: int = 40) -> tuple[tuple[float, float], int, str | None]:
    """The ``(range, bins, note)`` of a histogram of ``values`` (all inner steps of one tensor share them).

    Spread values: their min to max, ``size // 4`` bins (:data:`MIN_ALPHA_BINS` to ``max_bins``: a tensor of a
    few entries gets a narrow bar per entry rather than a few wide blocks), no note. Values all equal, or equal
    up to rounding (max − min ≤ 1e-6·max|α|, as when α has not moved from α_init): a range widened symmetrically
    around them (±5% of the value, ±0.05 around 0) in 21 bins, so the plot shows one narrow bar in the middle
    rather than an empty panel, and the note ``"all α = 0.1"`` (``≈`` when they differ by rounding) says so.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (-1.0, 1.0), 1, "no finite α"
    lo, hi = float(v.min()), float(v.max())
    scale = max(abs(lo), abs(hi))
    if hi - lo > 1e-6 * scale:
        return (lo, hi), min(max_bins, max(MIN_ALPHA_BINS, v.size // 4)), None
    center = (lo + hi) / 2
    half = 0.05 * abs(center) if center != 0 else 0.05
    return (center - half, center + half), 21, f"all α {'=' if hi == lo else '≈'} {center:.4g}"


#: a positive α whose largest entry is at least this many times its smallest is drawn on a logarithmic axis
ALPHA_LOG_RATIO = 10.0
#: when the tallest bin holds more than this fraction of a tensor's entries, the count axis is logarithmic
ALPHA_LOG_COUNTS = 0.5
ALPHA_INIT_STYLE: dict[str, Any] = dict(color="k", linestyle="--", linewidth=1)
ZERO_STYLE: dict[str, Any] = dict(color="r", linestyle=":", linewidth=1)


@dataclass(frozen=True)
class AlphaAxis:
    """How one tensor's α histogram is drawn (:func:`alpha_axis`)."""

    limits: tuple[float, float]  # the α axis
    edges: np.ndarray  # the bins' edges (all inner steps share them)
    log: bool  # a logarithmic α axis
    note: str | None  # "all α = 0.1" when the values are all equal


def alpha_axis(values: np.ndarray, alpha_init: float, max_bins: int = 40) -> AlphaAxis:
    """The α axis of one tensor's histogram, chosen from its values rather than from the lines drawn on it.

    - α all equal (:func:`alpha_histogram_range`'s note): its centred range, one narrow bar;
    - positive α spanning a factor :data:`ALPHA_LOG_RATIO` or more: a logarithmic axis with log-spaced bins, so
      that α near 0.01 and α near 1 both get bins;
    - otherwise the values' min to max, linear.

    The axis reaches out to α_init when it lies within half the values' span (in the axis's own scale) of
    them, so that its line shows where α started; a farther α_init would squeeze the values into a corner,
    and the legend names it instead. 0 is never forced onto the axis: an axis from 0 to 0.105 for α that
    stayed near 0.1 pressed every entry against the right edge. A 4% margin keeps the outer bars off the frame.
    """
    (lo, hi), bins, note = alpha_histogram_range(values, max_bins)
    if note is not None:
        return AlphaAxis((lo, hi), np.linspace(lo, hi, bins + 1), False, note)
    log = lo > 0 and hi >= ALPHA_LOG_RATIO * lo
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    a, b = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
    if alpha_init > 0 or not log:
        x = math.log10(alpha_init) if log else alpha_init
        if a - (b - a) / 2 <= x <= b + (b - a) / 2:
            a, b = min(a, x), max(b, x)
    margin = 0.04 * (b - a)
    limits = (10 ** (a - margin), 10 ** (b + margin)) if log else (a - margin, b + margin)
    return AlphaAxis((float(limits[0]), float(limits[1])), edges, log, None)


def _reference_lines(ax: Any, limits: tuple[float, float], alpha_init: float) -> set[str]:
    """α_init (dashed) and α = 0 (dotted) where they fall on the axis; returns which were drawn (``"init"``,
    ``"zero"``), for the figure's legend. α = 0 off the axis is left out (the title gives the fraction of
    negative entries); α_init off the axis is named by the caller's axis label."""
    drawn = set()
    if limits[0] <= alpha_init <= limits[1]:
        ax.axvline(alpha_init, **ALPHA_INIT_STYLE)
        drawn.add("init")
    if limits[0] <= 0.0 <= limits[1]:
        ax.axvline(0.0, **ZERO_STYLE)
        drawn.add("zero")
    return drawn


def _log_alpha_ticks(ax: Any) -> None:
    """A logarithmic α axis labelled in plain numbers at 1, 2 and 5 times powers of ten (0.02, 0.05, 0.1, ...),
    the unlabelled minor ticks between them."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _alpha_panel(ax: Any, name: str, flat: np.ndarray, alpha_init: float) -> set[str]:
    """One tensor's histogram (``flat``: ``[steps, entries]``) on the axis :func:`alpha_axis` chooses, with a
    logarithmic count axis when one bin holds most entries (so that the others stay visible), the reference
    lines (returns which were drawn) and a title of statistics."""
    from matplotlib.ticker import MaxNLocator

    axis = alpha_axis(flat, alpha_init)
    steps = flat.shape[0]
    tallest = max(int(np.histogram(row, bins=axis.edges)[0].max()) for row in flat)
    log_counts = axis.note is None and tallest > ALPHA_LOG_COUNTS * flat.shape[1] and flat.shape[1] >= 20
    for step in range(steps):
        ax.hist(flat[step], bins=axis.edges, log=log_counts, color=f"C{step}", alpha=0.6 if steps > 1 else 0.9)
    if axis.log:
        _log_alpha_ticks(ax)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))  # α near 0.1: long labels, few
    ax.set_xlim(axis.limits)
    drawn = _reference_lines(ax, axis.limits, alpha_init)
    stats = f"{100 * (flat < 0).mean():.1f}% < 0, mean {flat.mean():.3g}" if axis.note is None else axis.note
    ax.set_title(f"{name}\n{stats}, |α−α_init| {np.abs(flat - alpha_init).mean():.3g}", fontsize="small")
    xlabel = "α (log scale)" if axis.log else "α"
    if "init" not in drawn:
        side = "left" if alpha_init < axis.limits[0] else "right"
        xlabel += f"; α_init = {alpha_init:g} is off the axis, to the {side}"
    ax.set(xlabel=xlabel, ylabel="entries (log scale)" if log_counts else "entries")
    if not log_counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no tick at 0.5 entries
    return drawn


def _alpha_legend(fig: Figure, alpha_init: float, steps: int, drawn: set[str]) -> None:
    """One legend for every panel, below them: the lines some panel shows, and the inner steps' colours."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = []
    if "init" in drawn:
        handles.append(Line2D([], [], label=f"α_init = {alpha_init:g} (where α started)", **ALPHA_INIT_STYLE))
    if "zero" in drawn:
        handles.append(Line2D([], [], label="α = 0", **ZERO_STYLE))
    if steps > 1:
        handles += [Patch(color=f"C{k}", alpha=0.6, label=f"α of inner step {k + 1}") for k in range(steps)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small",
                   frameon=False)


def alpha_figure(model: MetaSGD, title: str = "") -> Figure:
    """The figure of :func:`plot_alpha`: one panel per α tensor, one legend, the unused grid cells hidden."""
    values = alpha_values(model)
    # α_init in α's dtype, as alpha_statistics: an untouched α is at 0 from it, not at float32 rounding
    dtype = next(iter(model.step_sizes.alphas.values())).detach().cpu().numpy().dtype
    alpha_init = float(np.asarray(model.config["alpha_init"], dtype=dtype))
    ncols = min(3, len(values))
    nrows = math.ceil(len(values) / ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=4.2, height=3.2)
    drawn: set[str] = set()
    for ax, (name, v) in zip(axes.ravel(), values.items(), strict=False):
        drawn |= _alpha_panel(ax, name, v.reshape(v.shape[0], -1), alpha_init)
    for ax in axes.ravel()[len(values):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    _alpha_legend(fig, alpha_init, model.step_sizes.num_steps, drawn)
    return fig


def plot_alpha(model: MetaSGD, path: str | os.PathLike, title: str = "") -> Path:
    """Per tensor, a histogram of α's values (one colour per inner step with ``alpha_per_step``) on an axis
    chosen from the values (:func:`alpha_axis`: around them and α_init, logarithmic where positive α spans
    decades), with α_init and 0 marked and named in the legend; the title gives the fraction of negative
    entries, the mean and mean |α − α_init|. A tensor whose α are all equal (e.g. still at α_init) gets one
    centred bar and the title says ``all α = ...``."""
    return save_png(alpha_figure(model, title), path)


# -- Navigation2D trajectories ----------------------------------------------------------------------------------


def is_navigation(model: MetaSGD) -> bool:
    return str(model.family.id or "").startswith("Navigation2D")


def trajectories(model: MetaSGD, tasks: Sequence[Mapping[str, Any]], steps: int, episodes: int,
                 seed: Any = 0) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Positions of each task's episodes before adaptation and after ``steps`` inner steps.

    ``[task][episode] -> array [n, 2]`` of the observed positions (the mask drops the frozen steps after the
    episode ended); rollouts as in :func:`~metasgd_rl.evaluation.adaptation_rollouts` with ``seed``.
    """
    batches = adaptation_rollouts(model, list(tasks), steps, episodes, seed)

    def paths(batch) -> list[list[np.ndarray]]:
        obs = batch.observations.detach().cpu().numpy()  # [H, T, E, 2]
        mask = batch.mask.detach().cpu().numpy() > 0
        return [[obs[mask[:, t, e], t, e, :2] for e in range(obs.shape[2])] for t in range(obs.shape[1])]

    return paths(batches[0]), paths(batches[-1])


def plot_trajectories(model: MetaSGD, tasks: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                      steps: int = 1, episodes: int = TRAJECTORY_EPISODES, seed: Any = 0, title: str = "") -> Path:
    """One panel per task: episodes before adaptation (grey) and after ``steps`` inner steps (colour),
    start (circle) and goal (star) marked."""
    before, after = trajectories(model, tasks, steps, episodes, seed)
    ncols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=3.4, height=3.4)
    for i, (ax, task) in enumerate(zip(axes.ravel(), tasks, strict=False)):
        for j, (label, runs, color) in enumerate((("before adaptation", before[i], "0.6"),
                                                 (f"after {steps} step{'s' * (steps != 1)}", after[i], "C0"))):
            for e, xy in enumerate(runs):
                if len(xy) == 0:
                    continue
                ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=1.2, alpha=0.9,
                        label=label if e == 0 else None)
                ax.plot(xy[0, 0], xy[0, 1], "o", color="k" if j else "0.3", markersize=4,
                        label="start" if (e == 0 and j == 1) else None)
        goal = np.asarray(task["goal"], dtype=np.float64)
        ax.plot(goal[0], goal[1], "*", color="C3", markersize=14, label="goal")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"goal ({goal[0]:.2f}, {goal[1]:.2f})", fontsize="small")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize="x-small")
    return _save_grid(fig, axes, len(tasks), title, path)


# -- the report -------------------------------------------------------------------------------------------------


def results_to_json(results: Mapping[str, AdaptationResult], command: str | None = None,
                    reference: str | None = None) -> str:
    """The ``results.json`` text: every result, and ``comparison`` (:func:`comparison_to_json`: each method's
    paired difference from ``reference`` per step) where two or more results share their tasks."""
    data: dict[str, Any] = {"format": RESULTS_FORMAT, "command": command,
                            "results": {name: result.to_dict() for name, result in results.items()}}
    comparison = comparison_to_json(results, reference)
    if comparison is not None:
        data["comparison"] = comparison
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def load_results(path: str | os.PathLike) -> dict[str, AdaptationResult]:
    """The results of a ``results.json`` written by :func:`write_report` (method name -> result)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a metasgd-rl results file (format {RESULTS_FORMAT})")
    return {name: AdaptationResult.from_dict(d) for name, d in data["results"].items()}


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a path, or a :class:`ComparisonError` if it cannot be created or written
    (:func:`~metasgd_rl.io.unwritable_reason`)."""
    reason = unwritable_reason(out_dir, directory=True)
    if reason is not None:
        advice = "" if reason.startswith("it is a ") else "; use a directory in a writable place"
        raise ComparisonError(f"--out {os.fspath(out_dir)!r} is not allowed: {reason}{advice}")
    return Path(out_dir)


def write_report(
    out_dir: str | os.PathLike,
    results: Mapping[str, AdaptationResult],
    runs: Mapping[str, str | os.PathLike] | None = None,
    models: Mapping[str, MetaSGD] | None = None,
    command: str | None = None,
    title: str = "Fast adaptation on held-out tasks",
    trajectory_tasks: int = TRAJECTORY_TASKS,
    notes: str | None = None,
    reference: str | None = None,
) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``out_dir`` (created if needed); returns
    the path of ``report.md``.

    ``results``: method name -> result (the adaptation curves and table; compare results on the same tasks).
    ``runs``: name -> run directory whose ``metrics.csv`` gives learning curves (a missing file is noted).
    ``models``: name -> model, for the α plots (Meta-SGD with learned α) and, on Navigation2D families, the
    trajectories on the first ``trajectory_tasks`` tasks of ``results[name]`` (or of the first result), with
    that result's steps and seed. ``command``: the command line that produced the report, quoted in it.
    ``notes``: markdown appended at the end (e.g. tables of baselines that are not adaptation curves).
    ``reference``: the method every other result evaluated on its tasks is compared with (paired over tasks, per
    step: :func:`paired_differences`), in the report and in ``results.json``; default :func:`comparison_reference`
    (the first MAML result, else the first).
    """
    if not results:
        raise ComparisonError("results={} is not allowed; give at least one AdaptationResult")
    if reference is not None and reference not in results:
        raise ComparisonError(f"reference={reference!r} is not allowed; use one of {list(results)}")
    out = _check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, models = dict(runs or {}), dict(models or {})
    taken: set[str] = set()
    slugs = {name: _slug(name, taken) for name in [*results, *(m for m in models if m not in results)]}
    first = next(iter(results.values()))
    md: list[str] = [f"# {title}", ""]
    md += ["Produced by:", "", "```", command or "(a library call to metasgd_rl.report.write_report)", "```", ""]

    # what was evaluated
    families = sorted({str(r.family) for r in results.values()})
    same_tasks = all(r.tasks == first.tasks for r in results.values())
    seeds = sorted({json.dumps(r.seed) for r in results.values()})
    md += [f"- task family: {', '.join(families)}",
           f"- tasks: {first.n_tasks} from split `{first.split}`" +
           (", the same tasks for every method" if same_tasks else
            "; **the methods were evaluated on different tasks**: their numbers are not directly comparable"),
           f"- episodes per task and step: {', '.join(sorted({str(r.episodes) for r in results.values()}))}",
           f"- seed: {', '.join(seeds)}",
           "- numbers: mean over tasks of each task's mean undiscounted episode return, ± the half-width of a "
           "95% Student-t confidence interval over tasks", ""]
    if any(r.split == "train" for r in results.values()):
        md += ["**Note**: some results were evaluated on `split=train`, the training task distribution, not on "
               "held-out tasks.", ""]
    leaky = [name for name, m in models.items() if not getattr(m.family, "disjoint_splits", True)]
    if leaky:
        md += [f"**Note**: the task family of {', '.join(leaky)} cannot hold tasks out (`disjoint_splits = "
               "False`): its test tasks come from the training distribution.", ""]

    # adaptation
    plot_adaptation_curves(results, out / ADAPTATION_PNG)
    md += ["## Fast adaptation", "", adaptation_table(results), ""]
    md += difference_lines(results, reference)
    if has_success(results):
        md += ["Success rate (the fraction of episodes in which the environment's success flag was set at any "
               "step), mean over tasks ± 95% CI:", "", adaptation_table(results, success=True), ""]
    md += [f"![Adaptation curves]({ADAPTATION_PNG})", ""]

    # learning curves
    if runs:
        md += ["## Meta-training", ""]
        metrics, missing = {}, []
        for name, run_dir in runs.items():
            try:
                columns = read_metrics(run_dir)
            except FileNotFoundError:
                missing.append(name)
                continue
            if columns:
                metrics[name] = columns
            else:
                missing.append(name)
        if metrics:
            plot_learning_curves(metrics, out / LEARNING_PNG)
            md += ["Mean return on each iteration's training tasks before (pre) and after (post) adaptation, "
                   "and on held-out tasks where the run evaluated them (`eval_every`).", "",
                   learning_table(metrics), "", f"![Learning curves]({LEARNING_PNG})", ""]
        if missing:
            md += [f"No metrics.csv rows for: {', '.join(missing)}.", ""]

    # step sizes
    if models:
        md += ["## Step sizes α", ""]
        for name, model in models.items():
            alpha_init = float(model.config["alpha_init"])
            md += [f"### {name}", ""]
            md += _probe_lines(model, results.get(name, first))
            if alpha_is_fixed(model):
                values = sorted({round(float(v), 6) for a in alpha_values(model).values() for v in a.ravel()})
                md += [f"{type(model).__name__}: α is fixed, not learned ({model.step_sizes.granularity} α = "
                       f"{', '.join(f'{v:g}' for v in values)} for every parameter, α_init = {alpha_init:g}); "
                       "nothing to plot.", ""]
                continue
            png = f"alpha-{slugs[name]}.png"
            plot_alpha(model, out / png, title=f"{name}: learned α ({model.step_sizes.granularity}), "
                                               f"α_init = {alpha_init:g}")
            md += [f"{type(model).__name__}, `alpha_granularity={model.step_sizes.granularity}`, α_init = "
                   f"{alpha_init:g}, iteration {model.iteration}.", "", alpha_table(model), "",
                   f"![α of {name}]({png})", ""]

    # trajectories
    navigation = {name: m for name, m in models.items() if is_navigation(m)}
    if navigation and trajectory_tasks > 0:
        md += ["## Trajectories", ""]
        for name, model in navigation.items():
            result = results.get(name, first)
            tasks = result.tasks[:trajectory_tasks]
            episodes = min(TRAJECTORY_EPISODES, result.episodes or TRAJECTORY_EPISODES)
            steps = max(result.steps, 0)
            png = f"trajectories-{slugs[name]}.png"
            seed = seed_from_json(result.seed)
            plot_trajectories(model, tasks, out / png, steps=steps, episodes=episodes,
                              seed=0 if seed is None else seed,
                              title=f"{name}: {len(tasks)} of the evaluated tasks, before and after {steps} steps")
            md += [f"### {name}", "", f"{episodes} episodes per task before adaptation (grey) and after {steps} "
                   f"inner step{'s' * (steps != 1)} (blue); start ○, goal ★.", "", f"![Trajectories of {name}]({png})",
                   ""]

    if notes:
        md += [notes.strip(), ""]
    atomic_write_text(out / RESULTS_FILE, results_to_json(results, command, reference))
    return atomic_write_text(out / REPORT_FILE, "\n".join(md).rstrip() + "\n")


def compare(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    n_tasks: int = 40,
    steps: int = 3,
    episodes: int = 20,
    seed: int = 0,
    command: str | None = None,
    extra_results: Mapping[str, AdaptationResult] | None = None,
    allow_env_imports: bool = False,
    max_envs: int | None = None,
) -> tuple[Path, dict[str, AdaptationResult]]:
    """:func:`evaluate_runs` then :func:`write_report` (what ``metasgd-rl compare`` does).

    ``extra_results`` (e.g. baselines evaluated on ``results[...].tasks``) are added to the report after the
    runs' results. The report and its ``results.json`` give every result's difference from the first MAML run
    (else the first run), paired over the shared tasks, after each step (:func:`difference_table`). Returns the
    report's path and all results.
    """
    _check_out_dir(out_dir)
    for run_dir in run_dirs:  # a damaged metrics.csv is refused before the evaluation, not after it
        check_metrics(run_dir)
    results, runs, models = evaluate_runs(run_dirs, n_tasks=n_tasks, steps=steps, episodes=episodes, seed=seed,
                                          allow_env_imports=allow_env_imports, max_envs=max_envs)
    for name, result in (extra_results or {}).items():
        if name in results:
            raise ComparisonError(f"extra result {name!r} is not allowed: a run has that name")
        results[name] = result
    path = write_report(out_dir, results, runs, models, command=command,
                        title=f"Comparison on {next(iter(results.values())).family}")
    return path, results
