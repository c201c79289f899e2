"""Model registry: drift statistics against hand computations, levels for known shifts, rollback recorded."""

import math

import numpy as np
import pytest
from svc_helpers import auth

from metalab.services.errors import Conflict
from metalab.services.registry import DriftConfig, ModelRegistryService, drift_report, population_stability_index


def psi_by_hand(reference, recent, bins):
    """Deciles of the reference, values counted one by one into (-inf, e1), [e1, e2), ..., [e9, inf)."""
    edges = sorted(set(np.quantile(reference, [i / bins for i in range(1, bins)]).tolist()))

    def shares(values):
        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[sum(v >= e for e in edges)] += 1
        return [max(c / len(values), 1e-4) for c in counts]

    return sum((q - p) * math.log(q / p) for p, q in zip(shares(reference), shares(recent)))


def ks_by_hand(a, b):
    points = np.sort(np.concatenate([a, b]))
    return max(
        abs(
            np.searchsorted(np.sort(a), x, side="right") / len(a)
            - np.searchsorted(np.sort(b), x, side="right") / len(b)
        )
        for x in points
    )


def test_psi_and_score_against_hand_computations():
    rng = np.random.default_rng(0)
    reference, recent = rng.normal(0, 1, 500), rng.normal(0.3, 1.2, 400)
    assert population_stability_index(reference, recent) == pytest.approx(psi_by_hand(reference, recent, 10), rel=1e-12)
    report = drift_report({"x": reference.tolist()}, {"x": recent.tolist()}, DriftConfig())
    d = report.features[0]
    assert d.ks_statistic == pytest.approx(ks_by_hand(recent, reference))
    assert d.score == pytest.approx(max(d.ks_statistic, 1 - math.exp(-d.psi)))
    assert d.mean_shift == pytest.approx(recent.mean() - reference.mean())


@pytest.mark.parametrize("shift,level", [(0.0, "none"), (0.35, "warning"), (1.0, "critical")])
def test_known_mean_shifts_get_their_level(shift, level):
    """Population KS distance of N(0,1) vs N(shift,1) is 2 Phi(shift/2) - 1: 0.14 (warning), 0.38 (critical)."""
    rng = np.random.default_rng(1)
    reference = {"x": rng.normal(0, 1, 3000).tolist(), "y": rng.normal(5, 2, 3000).tolist()}
    recent = {"x": rng.normal(shift, 1, 3000).tolist(), "y": rng.normal(5, 2, 3000).tolist()}
    report = drift_report(reference, recent, DriftConfig())
    assert report.level == level
    assert (
        report.recommendation
        == {"none": "continue monitoring", "warning": "retrain soon", "critical": "retrain now"}[level]
    )


def test_no_shift_false_alarm_rate_is_at_most_alpha():
    rng = np.random.default_rng(2)
    alarms = 0
    for _ in range(300):  # small streams: the score alone would cross 0.1 often; the Bonferroni gate holds it
        report = drift_report({"x": rng.normal(0, 1, 60).tolist()}, {"x": rng.normal(0, 1, 60).tolist()}, DriftConfig())
        alarms += report.level != "none"
    assert alarms / 300 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)


def test_rollback_restores_the_named_version_and_is_recorded(sessions):
    calls = []
    with sessions() as session:
        registry = ModelRegistryService(session, "alpha", retrain_hooks=[lambda *args: calls.append(args)])
        rng = np.random.default_rng(3)
        registry.register(
            "ranker", "v1", {"accuracy": 0.91}, "s3://models/ranker/v1", {"x": rng.normal(0, 1, 200).tolist()}
        )
        registry.register(
            "ranker", "v2", {"accuracy": 0.84}, "s3://models/ranker/v2", {"x": rng.normal(0, 1, 200).tolist()}
        )
        assert registry.active("ranker").metrics == {"accuracy": 0.84}
        report = registry.check_drift("ranker", {"x": rng.normal(2, 1, 200).tolist()})
        assert report.level == "critical" and len(calls) == 1 and calls[0][2] == "v2"
        registry.rollback("ranker", "v1", "v2 underperforms")
        assert registry.active("ranker").metrics == {"accuracy": 0.91}
        last = registry.events("ranker")[-1]
        assert (last.kind, last.from_version, last.to_version, last.details["reason"]) == (
            "rollback",
            "v2",
            "v1",
            "v2 underperforms",
        )
        with pytest.raises(Conflict, match="already active"):
            registry.rollback("ranker", "v1")
        with pytest.raises(Conflict, match="lacks the features x"):
            registry.check_drift("ranker", {"z": [0.0] * 50})


def test_registry_routes(api):
    body = {
        "version": "v1",
        "metrics": {"accuracy": 0.9},
        "artifact": "runs/1/model.ckpt",
        "reference": {"x": list(range(40))},
    }
    assert api.post("/v1/workspaces/alpha/models/ranker/versions", json=body, headers=auth()).status_code == 201
    assert api.post("/v1/workspaces/alpha/models/ranker/versions", json=body, headers=auth()).status_code == 409
    body2 = {**body, "version": "v2", "metrics": {"accuracy": 0.7}}
    assert api.post("/v1/workspaces/alpha/models/ranker/versions", json=body2, headers=auth()).status_code == 201
    drift = api.post(
        "/v1/workspaces/alpha/models/ranker/drift", json={"recent": {"x": [v + 100 for v in range(40)]}}, headers=auth()
    )
    assert drift.status_code == 200 and drift.json()["level"] == "critical" and drift.json()["retrain_requested"]
    back = api.post("/v1/workspaces/alpha/models/ranker/rollback", json={"version": "v1"}, headers=auth())
    assert back.status_code == 200 and back.json()["metrics"] == {"accuracy": 0.9}
    model = api.get("/v1/workspaces/alpha/models/ranker", headers=auth()).json()
    assert model["active_version"] == "v1"
    events = api.get("/v1/workspaces/alpha/models/ranker/events", headers=auth()).json()["items"]
    assert [e["kind"] for e in events][-2:] == ["retrain_requested", "rollback"]
    assert api.get("/v1/workspaces/beta/models/ranker", headers=auth("beta")).status_code == 404
    short = api.post("/v1/workspaces/alpha/models/ranker/drift", json={"recent": {"x": [1.0]}}, headers=auth())
    assert short.status_code == 422 and "at least 30" in short.json()["detail"]
