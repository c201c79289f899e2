"""Transfer insights: OpenDP's Gaussian release is calibrated to epsilon, the budget is charged and refuses."""

import math

import numpy as np
import pytest
from scipy import stats
from svc_helpers import auth

from metalab.services.errors import Conflict
from metalab.services.store.models import Workspace
from metalab.services.transfer import (
    BudgetExhausted,
    TransferConfig,
    TransferService,
    calibrated_mean_release,
    private_mean,
    similarity,
)


def analytic_gaussian_epsilon(sigma_over_sensitivity: float, delta: float) -> float:
    """The exact (epsilon, delta) curve of the Gaussian mechanism (Balle & Wang 2018, Theorem 8), solved for
    epsilon; two releases each with sensitivity/sigma = 1/s compose like one with sqrt(2)/s."""
    mu = math.sqrt(2) / sigma_over_sensitivity

    def delta_at(eps):
        return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)

    low, high = 0.0, 50.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if delta_at(mid) > delta else (low, mid)
    return high


@pytest.mark.parametrize("epsilon", [1.0, 0.5])
def test_noise_scale_gives_epsilon_by_an_independent_gaussian_curve(epsilon):
    """OpenDP's zCDP accounting is looser than the exact Gaussian curve, never tighter: the exact epsilon of
    the chosen scale must be at most the asked one, and not far below it (a mis-set sensitivity fails)."""
    _, sum_scale, count_scale = calibrated_mean_release(0.0, 10.0, epsilon, 1e-6)
    assert sum_scale == pytest.approx(10.0 * count_scale)
    exact = analytic_gaussian_epsilon(count_scale, 1e-6)
    assert 0.6 * epsilon < exact <= epsilon


def test_release_is_unbiased_and_has_the_stated_spread():
    """OpenDP draws from its own unseedable CSPRNG, so the bounds are six standard errors (a false failure
    under once in 10^8 runs; four, the old bound, failed a CI run): a bias of one count or a noise scale off
    by 10 % still fails."""
    n = 10_000
    values = [2.0, 4.0, 6.0, 8.0, 20.0]  # 20 is clipped to the upper bound 10
    draws = [private_mean(values, 0.0, 10.0, 1.0, 1e-6) for _ in range(n)]
    sums = np.array([d.noisy_sum for d in draws])
    counts = np.array([d.noisy_count for d in draws])
    sum_scale, count_scale = draws[0].sum_scale, draws[0].count_scale
    assert abs(sums.mean() - 30.0) < 6 * sum_scale / math.sqrt(n)
    assert abs(counts.mean() - 5.0) < 6 * count_scale / math.sqrt(n)
    # the standard error of a sample standard deviation is about 1 / sqrt(2 n) of it: 0.7 % here
    assert 0.95 < sums.std() / sum_scale < 1.05
    assert 0.95 < counts.std() / count_scale < 1.05


def test_similarity_is_cosine():
    assert similarity({"a": 1, "b": 0}, {"a": 2, "b": 0}) == pytest.approx(1.0)
    assert similarity({"a": 1, "b": 0}, {"a": 0, "b": 3}) == pytest.approx(0.0)
    assert similarity({"a": 1, "b": 1}, {"a": 1, "b": 0}) == pytest.approx(1 / math.sqrt(2))


def _publish(session, names, budget=None):
    for i, name in enumerate(names):
        if session.get(Workspace, name) is None:
            session.add(Workspace(name=name))
        session.flush()
        TransferService(session, name).publish({"size": 1.0, "gpu": 0.1 * (i % 3)}, {"batch": 32.0 + i}, budget)


def test_budget_is_charged_to_every_contributor_and_refuses_when_spent(sessions):
    with sessions() as session:
        _publish(session, [f"w{i}" for i in range(5)], budget=2.5)
        asker = TransferService(session, "w0", TransferConfig(min_workspaces=5))
        for _ in range(2):
            asker.insight("batch", 0.0, 64.0, epsilon=1.0)
        assert TransferService(session, "w3").budget()["spent_epsilon"] == pytest.approx(2.0)
        with pytest.raises(BudgetExhausted, match="budget spent"):
            asker.insight("batch", 0.0, 64.0, epsilon=1.0)
        assert TransferService(session, "w3").budget()["spent_epsilon"] == pytest.approx(2.0)  # nothing charged
        asker.insight("batch", 0.0, 64.0, epsilon=0.5)  # what is left can still be spent
        with pytest.raises(Conflict, match="fewer than 6"):
            TransferService(session, "w0", TransferConfig(min_workspaces=6)).insight("batch", 0.0, 64.0)
        with pytest.raises(Conflict, match="set once"):
            TransferService(session, "w1").publish({"size": 1.0}, {}, budget_epsilon=9.0)


def test_transfer_routes(api):
    for workspace in ("alpha", "beta"):
        r = api.post(
            f"/v1/workspaces/{workspace}/transfer/profile",
            json={"features": {"a": 1.0}, "metrics": {"m": 1.0}},
            headers=auth(workspace),
        )
        assert r.status_code == 200, r.text
    few = api.post(
        "/v1/workspaces/alpha/transfer/insights", json={"metric": "m", "lower": 0, "upper": 2}, headers=auth()
    )
    assert few.status_code == 409 and "fewer than 5" in few.json()["detail"]
    bounds = api.post(
        "/v1/workspaces/alpha/transfer/insights", json={"metric": "m", "lower": 3, "upper": 2}, headers=auth()
    )
    assert bounds.status_code in (409, 422)
    budget = api.get("/v1/workspaces/alpha/transfer/budget", headers=auth())
    assert budget.status_code == 200 and budget.json()["spent_epsilon"] == 0.0
    cohort = api.get("/v1/workspaces/alpha/transfer/cohort", params={"metric": "m"}, headers=auth())
    assert cohort.json() == {"metric": "m", "enough_for_insights": False}
