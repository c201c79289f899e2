"""The mSPRT and its confidence sequence against an independent computation, and its error rate."""

import numpy as np
import pytest
from scipy import integrate, stats

from metalab.services import sequential
from metalab.services.simulate import sequential_monitoring


@pytest.mark.parametrize("d, v, tau2", [(0.0, 0.01, 0.04), (0.3, 0.02, 0.01), (-0.5, 0.1, 0.3), (0.05, 1e-4, 1e-3)])
def test_likelihood_ratio_matches_numerical_mixture(d, v, tau2):
    """Lambda = integral of N(d; theta, v) / N(d; 0, v) over theta ~ N(0, tau^2), by quadrature."""

    def integrand(theta):
        return (
            stats.norm.pdf(d, theta, np.sqrt(v))
            / stats.norm.pdf(d, 0, np.sqrt(v))
            * stats.norm.pdf(theta, 0, np.sqrt(tau2))
        )

    scale = np.sqrt(tau2)
    reference, _ = integrate.quad(integrand, -12 * scale, 12 * scale, points=[0.0, d], limit=200)
    assert np.exp(sequential.log_likelihood_ratio(d, v, tau2)) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("v, tau2, alpha", [(0.01, 0.04, 0.05), (0.5, 0.01, 0.01)])
def test_confidence_sequence_is_where_the_ratio_reaches_one_over_alpha(v, tau2, alpha):
    radius = sequential.confidence_sequence_radius(v, tau2, alpha)
    assert sequential.log_likelihood_ratio(radius, v, tau2) == pytest.approx(np.log(1 / alpha))
    assert (
        sequential.p_value_at_look(radius * 0.99, v, tau2) > alpha > sequential.p_value_at_look(radius * 1.01, v, tau2)
    )


def test_plugin_variance_of_running_sums():
    x = np.array([1.0, 4.0, 2.0, 8.0])
    assert sequential.plugin_variance(4, x.sum(), (x**2).sum(), binary=False) == pytest.approx(np.var(x, ddof=1))
    assert sequential.plugin_variance(9, 4, 4, binary=True) == pytest.approx(0.45 * 0.55)


def test_false_positive_rate_under_continuous_monitoring_small():
    """300 A/A experiments analysed after each of 2,000 outcomes reject at most 5% (the script runs 1,000 x 10,000)."""
    result = sequential_monitoring(300, 2000, [0.2, 0.2], binary=True, seed=1)
    assert result["rejection_rate"] <= 0.05


def test_a_large_lift_is_found_early():
    result = sequential_monitoring(50, 2000, [0.2, 0.4], binary=True, seed=2)
    assert result["rejection_rate"] >= 0.95 and result["mean_stopping_time"] < 1000


def test_a_naive_fixed_sample_test_repeated_after_each_outcome_does_reject_too_often():
    """Why the mSPRT is needed: a z-test at every look (the peeking mistake) exceeds 5% on the same data model."""
    rng = np.random.default_rng(3)
    y = rng.random((300, 2, 1000)) < 0.2
    n = np.arange(1, 1001)
    pa, pb = y[:, 0].cumsum(1) / n, y[:, 1].cumsum(1) / n
    pooled = (pa + pb) / 2
    z = (pb - pa) / np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / n, 1e-12))
    peeking_rejects = (np.abs(z[:, 100:]) > 1.96).any(axis=1).mean()
    assert peeking_rejects > 0.15
