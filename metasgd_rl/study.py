"""Multi-seed comparisons of methods: the numbers a reproduction study reports.

A study trains every method with several seeds and evaluates each run on the same tasks; a run's score after k
inner steps is its mean return over those tasks. Seeds, not tasks, are the independent samples of a method, so
the table gives the mean over seeds ± a 95 % t-interval over seeds, and every method is compared with a
reference (MAML) by Welch's t-test over seeds (it does not assume the two methods' scores spread alike).
Used by ``scripts/reproduce_navigation.py``, ``scripts/reproduce_locomotion.py`` and ``scripts/reproduce_metaworld.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from metasgd_rl.stats import mean_ci95, welch_test


def summarise_seeds(per_seed: Mapping[str, np.ndarray], reference: str = "maml",
                    tested: Sequence[str] | None = None) -> dict[str, Any]:
    """Per method, ``(mean, 95 % half-width)`` over seeds after each step; Welch's test of each method of
    ``tested`` (default: every method but ``reference``) minus ``reference`` at each step.

    ``per_seed[method]``: ``[n_seeds, steps + 1]``, one row per seed (methods may have different seed counts).
    Returns ``{"methods": {method: [(mean, half), ...]}, "welch_vs_<reference>": {method: [WelchTest dict, ...]}}``;
    the Welch part is empty when ``reference`` is not among the methods. A single seed gives a NaN half-width.
    """
    arrays = {m: np.atleast_2d(np.asarray(v, dtype=np.float64)) for m, v in per_seed.items()}
    steps = {a.shape[1] for a in arrays.values()}
    if len(steps) > 1:
        raise ValueError(f"every method needs the same number of steps, got {sorted(steps)}")
    summary: dict[str, Any] = {"methods": {}, f"welch_vs_{reference}": {}}
    for method, scores in arrays.items():
        summary["methods"][method] = [mean_ci95(scores[:, k]) for k in range(scores.shape[1])]
        if method != reference and reference in arrays and (tested is None or method in tested):
            summary[f"welch_vs_{reference}"][method] = [
                asdict(welch_test(scores[:, k], arrays[reference][:, k])) for k in range(scores.shape[1])]
    return summary


def step_header(steps: int) -> list[str]:
    """Column titles of steps 0..``steps``: "after 0 steps", "after 1 step", ..."""
    return [f"after {k} step{'s' if k != 1 else ''}" for k in range(steps + 1)]


def _cell(mean: float, half: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{mean:.{digits}f}"


def seed_rows(group: str, summary: Mapping[str, Any], labels: Mapping[str, str], reference: str = "maml",
              digits: int = 1) -> list[str]:
    """Markdown rows ``| group | method | mean ± half | ... |`` for every method of ``summary``
    (:func:`summarise_seeds`), then one row per Welch test: the difference from ``reference`` ± its 95 %
    interval and the p-value."""
    lines = []
    for method, cells in summary["methods"].items():
        lines.append(f"| {group} | {labels.get(method, method)} | "
                     + " | ".join(_cell(m, h, digits) for m, h in cells) + " |")
    ref = labels.get(reference, reference)
    for method, tests in summary.get(f"welch_vs_{reference}", {}).items():
        lines.append(f"| {group} | {labels.get(method, method)} − {ref} (Welch p) | " + " | ".join(
            f"{w['difference']:+.{digits}f} ± {w['ci95']:.{digits}f} (p = {w['p_value']:.2f})"
            if np.isfinite(w["p_value"]) else f"{w['difference']:+.{digits}f} (one seed: no test)"
            for w in tests) + " |")
    return lines


def plot_seed_adaptation(ax: Any, summary: Mapping[str, Any], labels: Mapping[str, str], title: str = "") -> None:
    """Each method's mean over seeds after 0..K steps on ``ax``, with its 95 % interval shaded."""
    for method, cells in summary["methods"].items():
        mean = np.array([m for m, _ in cells])
        half = np.nan_to_num(np.array([h for _, h in cells]))
        steps = np.arange(len(mean))
        ax.plot(steps, mean, marker="o", label=labels.get(method, method))
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set(title=title, xlabel="inner steps on the evaluation task", ylabel="return", xticks=list(range(len(mean))))
    ax.legend(fontsize="small")


def seed_arrays(scores: Mapping[str, Mapping[Any, Sequence[float]]]) -> dict[str, np.ndarray]:
    """``{method: {seed: per-step scores}}`` -> ``{method: [n_seeds, steps + 1]}``, seeds in sorted order."""
    return {m: np.array([by_seed[s] for s in sorted(by_seed)], dtype=np.float64) for m, by_seed in scores.items()}
