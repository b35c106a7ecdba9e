"""Student-t intervals and Welch's test against hand-computed values and scipy's own implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from metasgd_rl.stats import interquartile_mean, mean_ci95, paired_test, t_ci95, welch_test


def test_mean_ci95_of_known_data():
    # 1..5: mean 3, s = sqrt(2.5), t_{0.975, 4} = 2.7764451051977987
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert math.isnan(mean_ci95([4.0])[1])
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95([])


def test_t_ci95_along_an_axis():
    values = np.arange(12.0).reshape(3, 4) ** 2
    np.testing.assert_allclose(t_ci95(values, axis=1), [mean_ci95(row)[1] for row in values], rtol=1e-12)
    assert np.isnan(t_ci95(values[:1], axis=0)).all()


def test_welch_test_of_known_data():
    # a = 1..5 (var 2.5), b = 2, 4, .., 10 (var 10): se = sqrt(0.5 + 2), t = -3 / sqrt(2.5),
    # Welch–Satterthwaite dof = 2.5^2 / (0.5^2 / 4 + 2^2 / 4) = 6.25 / 1.0625
    a, b = np.arange(1.0, 6.0), 2.0 * np.arange(1.0, 6.0)
    result = welch_test(a, b)
    dof = 6.25 / 1.0625
    assert result.difference == -3.0
    assert result.t == pytest.approx(-3.0 / math.sqrt(2.5), rel=1e-12)
    assert result.dof == pytest.approx(dof, rel=1e-12)
    assert result.p_value == pytest.approx(2 * stats.t.sf(3.0 / math.sqrt(2.5), dof), rel=1e-10)
    assert result.ci95 == pytest.approx(stats.t.ppf(0.975, dof) * math.sqrt(2.5), rel=1e-10)
    # and scipy's implementation agrees
    assert result.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-10)
    # the sign of the difference follows the order of the samples; p does not
    swapped = welch_test(b, a)
    assert swapped.difference == 3.0 and swapped.p_value == pytest.approx(result.p_value)


def test_welch_test_separates_clearly_different_samples_and_not_equal_ones():
    rng = np.random.default_rng(0)
    assert welch_test(rng.normal(0, 1, 30), rng.normal(2, 1, 30)).p_value < 1e-6
    same = welch_test(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]))
    assert same.difference == 0.0 and same.p_value == pytest.approx(1.0)


def test_welch_test_without_enough_data_is_nan():
    assert math.isnan(welch_test([1.0], [2.0, 3.0]).p_value)
    assert math.isnan(welch_test([1.0, 1.0], [2.0, 2.0]).p_value)  # no variance at all
    with pytest.raises(ValueError, match="non-empty"):
        welch_test([], [1.0])


def test_paired_test_matches_scipy_ttest_rel():
    from scipy import stats

    rng = np.random.default_rng(3)
    task_difficulty = rng.normal(0, 10, 25)  # shared by both methods: pairing removes it
    a = task_difficulty + rng.normal(1.0, 1.0, 25)
    b = task_difficulty + rng.normal(0.0, 1.0, 25)
    result = paired_test(a, b)
    reference = stats.ttest_rel(a, b)
    interval = reference.confidence_interval(0.95)
    assert result.difference == pytest.approx(np.mean(a - b))
    assert result.t == pytest.approx(reference.statistic) and result.p_value == pytest.approx(reference.pvalue)
    assert result.dof == reference.df == 24 and result.n == 25
    assert result.difference - result.ci95 == pytest.approx(interval.low)
    assert result.difference + result.ci95 == pytest.approx(interval.high)
    assert result.p_value < 0.01 < welch_test(a, b).p_value  # the unpaired test drowns in the tasks' spread
    assert paired_test(b, a).t == pytest.approx(-result.t)


def test_paired_test_without_enough_data_is_nan_and_refuses_unequal_sizes():
    one = paired_test(np.array([2.0]), np.array([1.0]))
    assert one.difference == 1.0 and np.isnan(one.ci95) and np.isnan(one.p_value) and one.n == 1
    constant = paired_test(np.array([2.0, 3.0]), np.array([1.0, 2.0]))  # every difference is 1
    assert constant.difference == 1.0 and np.isnan(constant.p_value)
    with pytest.raises(ValueError, match="same size"):
        paired_test(np.array([1.0, 2.0]), np.array([1.0]))


def test_interquartile_mean_drops_the_outer_quarters():
    assert interquartile_mean([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 10.0]) == pytest.approx(0.35)  # 0.2..0.5
    assert interquartile_mean([0.1, 0.3]) == pytest.approx(0.2)  # too few to cut: the mean
    assert interquartile_mean([5.0, 1.0, 3.0, 100.0]) == pytest.approx(4.0)  # 3 and 5
    with pytest.raises(ValueError, match="no values"):
        interquartile_mean([])
