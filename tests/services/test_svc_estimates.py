"""Probability to be best by quadrature against closed forms; the written-out intervals against scipy.stats."""

import numpy as np
import pytest
from scipy import special, stats

from metalab.services.estimates import probability_best, t_interval, wilson_interval


def _beta_b_beats_a(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(p_B > p_A) for Beta posteriors with integer parameters (the finite sum of Evan Miller, 2014)."""
    terms = [
        np.exp(
            special.betaln(a_a + i, b_a + b_b) - np.log(b_b + i) - special.betaln(1 + i, b_b) - special.betaln(a_a, b_a)
        )
        for i in range(a_b)
    ]
    return float(np.sum(terms))


@pytest.mark.parametrize("counts,successes", [((100, 250), (10, 30)), ((5000, 40), (400, 5)), ((0, 12), (0, 3))])
def test_two_binary_arms_equal_the_closed_form(counts, successes):
    n, s = np.array(counts, float), np.array(successes, float)
    p = probability_best(n, s, s / np.maximum(n, 1) * (1 - s / np.maximum(n, 1)), binary=True)
    exact = _beta_b_beats_a(int(1 + s[0]), int(1 + n[0] - s[0]), int(1 + s[1]), int(1 + n[1] - s[1]))
    assert p[1] == pytest.approx(exact, abs=1e-9) and p.sum() == pytest.approx(1.0, abs=1e-9)


def test_normal_arms_equal_the_closed_form_and_three_arms_a_large_monte_carlo():
    n, total, var = np.array([50.0, 4000.0]), np.array([10.0, 880.0]), np.array([1.0, 2.0])
    p = probability_best(n, total, var, binary=False)
    difference, scale = total[1] / n[1] - total[0] / n[0], np.sqrt(var[0] / n[0] + var[1] / n[1])
    assert p[1] == pytest.approx(stats.norm.cdf(difference / scale), abs=1e-9)
    n3, s3 = np.array([300.0, 2000.0, 150.0]), np.array([30.0, 230.0, 18.0])
    p3 = probability_best(n3, s3, s3 / n3 * (1 - s3 / n3), binary=True)
    draws = np.random.default_rng(0).beta(1 + s3, 1 + n3 - s3, size=(1_000_000, 3))
    assert p3 == pytest.approx(np.bincount(draws.argmax(1), minlength=3) / 1e6, abs=2e-3)


def test_intervals_equal_scipy():
    ci = stats.binomtest(17, 230).proportion_ci(0.95, method="wilson")
    assert wilson_interval(17, 230) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert t_interval(3.0, 2.5, 12) == pytest.approx(
        stats.t.interval(0.95, 11, loc=3.0, scale=np.sqrt(2.5 / 12)), rel=1e-12
    )
