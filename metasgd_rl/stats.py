"""Confidence intervals and the significance tests used to compare methods over tasks or seeds.

Small samples are the rule here (5 seeds, 40 tasks), so intervals use Student's t rather than the normal
approximation. Two methods' scores over seeds are compared with Welch's t-test, which does not assume equal
variances (Meta-SGD's returns over seeds need not spread like MAML's); two methods evaluated on the same tasks
with the paired t-test over tasks (:func:`paired_test`), which removes the spread that comes from the tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def t_ci95(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Half-width of the 95% Student-t confidence interval of the mean of ``values`` along ``axis``.

    ``t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation (``ddof=1``); NaN where
    ``n < 2``, where no interval can be estimated.
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    shape = values.shape[:axis] + values.shape[axis + 1:]
    if n < 2:
        return np.full(shape, np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle half of a 1-D sample (25 % cut from each end, as ``scipy.stats.trim_mean``): the
    aggregate Meta-World+ and rliable report over seeds, less swayed by one outlying run than the mean. Below four
    values nothing is cut (it is the mean)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("the interquartile mean of no values is undefined")
    return float(stats.trim_mean(values, 0.25))


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean of a 1-D sample and the half-width of its 95% t-interval (NaN for a single value)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    return float(values.mean()), float(t_ci95(values))


@dataclass(frozen=True)
class WelchTest:
    """Welch's two-sample t-test of mean(a) − mean(b), two-sided.

    ``difference`` ± ``ci95`` is the 95% interval of the difference of means with the Welch–Satterthwaite
    degrees of freedom ``dof``; ``p_value`` the two-sided p-value of "no difference". NaN where either sample
    has fewer than two values or both have zero variance.
    """

    difference: float
    ci95: float
    t: float
    dof: float
    p_value: float


def welch_test(a: np.ndarray, b: np.ndarray) -> WelchTest:
    """Welch's t-test of two independent samples (e.g. one method's per-seed scores against another's)."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"welch_test needs two non-empty samples, got sizes {a.size} and {b.size}")
    difference = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return WelchTest(difference, math.nan, math.nan, math.nan, math.nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return WelchTest(difference, math.nan, math.nan, math.nan, math.nan)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    t = difference / se
    return WelchTest(difference=difference, ci95=float(stats.t.ppf(0.975, dof) * se), t=float(t), dof=float(dof),
                     p_value=float(2.0 * stats.t.sf(abs(t), dof)))


@dataclass(frozen=True)
class PairedTest:
    """The paired t-test of mean(a − b) over pairs (e.g. two methods' returns on the same tasks), two-sided.

    ``difference`` ± ``ci95`` is the 95% t-interval of the mean per-pair difference with ``dof = n − 1``;
    ``p_value`` the two-sided p-value of "no difference" (as ``scipy.stats.ttest_rel``). Pairing removes what
    the pairs share (how hard each task is), so it is far tighter than a two-sample test of the same numbers.
    ``ci95``, ``t``, ``dof`` and ``p_value`` are NaN with fewer than two pairs or when every difference is equal.
    """

    difference: float
    ci95: float
    t: float
    dof: float
    p_value: float
    n: int


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Paired t-test of ``a`` against ``b`` (same length, element i of each measured on the same unit)."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size or a.size == 0:
        raise ValueError(f"paired_test needs two non-empty samples of the same size, got sizes {a.size} and {b.size}")
    d = a - b
    n = int(d.size)
    difference = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    if n < 2 or se == 0.0:
        return PairedTest(difference, math.nan, math.nan, math.nan, math.nan, n)
    t = difference / se
    dof = n - 1
    return PairedTest(difference=difference, ci95=float(stats.t.ppf(0.975, dof) * se), t=float(t), dof=float(dof),
                      p_value=float(2.0 * stats.t.sf(abs(t), dof)), n=n)
