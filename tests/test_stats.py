"""The exact binomial test, the Clopper-Pearson interval and the sample sizes the
labs' ratio checks rely on, against known values and their own definitions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from meshlab.grading import CheckFailed
from meshlab.grading import stats


@pytest.mark.parametrize("k, n, p, expected", [
    (3, 10, 0.5, 0.34375),          # R: binom.test(3, 10, 0.5)$p.value
    (0, 10, 0.5, 0.001953125),      # 2 * 0.5^10
    (682, 925, 0.75, 0.3825),       # R's documentation example (Mendel's peas)
    (10, 100, 0.1, 1.0),
])
def test_p_value_matches_known_values(k, n, p, expected):
    assert stats.p_value(k, n, p) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("k, n, low, high", [
    (3, 10, 0.066739, 0.652453),     # R: binom.test(3, 10)$conf.int
    (0, 10, 0.0, 0.308497),
    (10, 10, 0.691503, 1.0),
])
def test_clopper_pearson_matches_known_values(k, n, low, high):
    got = stats.clopper_pearson(k, n, 0.95)
    assert got == pytest.approx((low, high), abs=1e-5)


def test_acceptance_region_is_where_the_p_value_is_large_enough():
    for n, p, alpha in [(30, 0.1, 0.01), (50, 0.3, 1e-3), (200, 0.1, 1e-6), (104, 0.5, 1e-6)]:
        accepted = [k for k in range(n + 1) if stats.p_value(k, n, p) >= alpha]
        assert stats.acceptance_region(n, p, alpha) == (min(accepted), max(accepted))
        assert accepted == list(range(min(accepted), max(accepted) + 1))  # an interval


@pytest.mark.parametrize("share, wrong", [
    (0.10, (0.0, 0.2, 0.5)),                    # lab 02's split: 100/0, 80/20, 50/50
    (0.50, (0.0, 0.10, 1.0)),                   # lab 02's mirror
    (0.10, (0.0, 0.001, 0.01, 0.5, 1.0)),       # lab 03's faults
])
def test_sample_size_keeps_both_errors_below_one_in_a_million(share, wrong):
    n = stats.sample_size(share, wrong)
    low, high = stats.acceptance_region(n, share)
    correct_fails = 1 - math.fsum(stats.pmf(k, n, share) for k in range(low, high + 1))
    assert correct_fails <= stats.ALPHA
    for q in wrong:
        wrong_passes = math.fsum(stats.pmf(k, n, q) for k in range(low, high + 1))
        assert wrong_passes <= stats.BETA, q
    # and it is not much larger than needed: a tenth fewer requests would not do
    assert not all(stats.power_against(int(n * 0.9), share, q) >= 1 - stats.BETA for q in wrong)


def test_the_split_sample_catches_80_20_and_accepts_90_10_at_its_edges():
    n = stats.sample_size(0.10, (0.0, 0.2, 0.5))
    low, high = stats.acceptance_region(n, 0.10)
    assert stats.binomial_test(low, n, 0.10).passed and stats.binomial_test(high, n, 0.10).passed
    assert not stats.binomial_test(low - 1, n, 0.10).passed
    assert not stats.binomial_test(high + 1, n, 0.10).passed
    assert not stats.binomial_test(round(0.2 * n), n, 0.10).passed


def test_expect_share_explains_a_wrong_split():
    with pytest.raises(CheckFailed) as failure:
        stats.expect_share(231, 1154, 0.10, what="went to v2", hint="weights")
    error = failure.value
    assert "231 of 1154 requests went to v2: 20 %" in error.summary
    assert "between" in error.expected and "exact binomial test" in error.expected
    assert "interval" in error.received and "p-value" in error.received
    assert error.hint == "weights"
    verdict = stats.expect_share(118, 1154, 0.10, what="went to v2")
    assert verdict.passed and verdict.interval[0] < 0.10 < verdict.interval[1]


def test_binomial_test_rejects_impossible_counts():
    with pytest.raises(ValueError):
        stats.binomial_test(5, 4, 0.5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), data=st.data())
def test_p_value_and_interval_are_consistent(n, data):
    k = data.draw(st.integers(0, n))
    p = data.draw(st.floats(0.01, 0.99))
    value = stats.p_value(k, n, p)
    assert 0.0 <= value <= 1.0
    low, high = stats.clopper_pearson(k, n, 0.99)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert math.fsum(stats.pmf(i, n, p) for i in range(n + 1)) == pytest.approx(1.0)
