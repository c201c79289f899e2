"""Performance predictor: k nearest jobs and split-conformal intervals, held against a hand computation."""

import math

import numpy as np
import pytest
from svc_helpers import auth

from metalab.services.errors import Conflict, Unprocessable
from metalab.services.predictor import PredictorConfig, PredictorService, _split, fit_predict


def library(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 3))
    duration = np.exp(3 + 1.5 * x[:, 0] - x[:, 1] + rng.normal(0, 0.1, n))
    error = np.clip(0.02 + 0.1 * x[:, 2] + rng.normal(0, 0.01, n), 0, 1)
    resources = duration * (1 + x[:, 1]) / 60
    return x, {"duration_s": duration, "error_rate": error, "resources": resources}


def reference_interval(x, y, new, k, confidence, train, calibration):
    """Split conformal written out: standardise on the training part, brute-force k nearest, mean of their
    targets, half-width = the ceil((n_cal + 1) * confidence)-th smallest calibration residual."""
    mean, std = x[train].mean(0), x[train].std(0)
    z = (x - mean) / std

    def knn(points):
        d = ((points[:, None, :] - z[train][None]) ** 2).sum(-1)
        return y[train][np.argsort(d, axis=1, kind="stable")[:, :k]].mean(1)

    residuals = np.sort(np.abs(y[calibration] - knn(z[calibration])))
    q = residuals[math.ceil((len(calibration) + 1) * confidence) - 1]
    point = knn((new - mean) / std)
    return point, point - q, point + q


@pytest.mark.parametrize("confidence", [0.9, 0.8])
def test_intervals_equal_split_conformal_by_hand(confidence):
    x, targets = library(200)
    new = np.random.default_rng(5).uniform(0, 1, size=(7, 3))
    config = PredictorConfig(k=10, confidence=confidence)
    predictions = fit_predict(x, targets, new, config)
    train, calibration = _split(len(x), config)
    point, low, high = reference_interval(x, np.log(targets["duration_s"]), new, 10, confidence, train, calibration)
    assert np.allclose([p.estimate["duration_s"] for p in predictions], np.exp(point), rtol=1e-9)
    assert np.allclose([p.interval["duration_s"] for p in predictions], np.exp(np.stack([low, high], 1)), rtol=1e-9)
    point, low, high = reference_interval(x, targets["error_rate"], new, 10, confidence, train, calibration)
    assert np.allclose([p.interval["error_rate"] for p in predictions], np.clip(np.stack([low, high], 1), 0, 1))
    assert all(p.recommended_resources == p.interval["resources"][1] for p in predictions)


def test_held_out_coverage_is_near_nominal():
    x, targets = library(3000, seed=1)
    fresh_x, fresh = library(1000, seed=2)
    predictions = fit_predict(x, targets, fresh_x, PredictorConfig())
    inside = [
        p.interval["duration_s"][0] <= d <= p.interval["duration_s"][1]
        for p, d in zip(predictions, fresh["duration_s"])
    ]
    assert 0.86 <= np.mean(inside) <= 0.94  # 750 calibration jobs, 1000 held out: ~0.9 +- 0.02


def test_risk_flags_and_refusals(sessions):
    x, targets = library(60)
    with sessions() as session:
        service = PredictorService(session, "alpha")
        with pytest.raises(Conflict, match="at least 40"):
            service.predict({"a": 0.5, "b": 0.5, "c": 0.5})
        for row, d, e, r in zip(x, targets["duration_s"], targets["error_rate"], targets["resources"]):
            service.record({"a": row[0], "b": row[1], "c": row[2]}, d, e, r)
        with pytest.raises(Unprocessable, match="features a, b, c"):
            service.record({"a": 1.0}, 1.0, 0.0, 1.0)
        near = service.predict({"a": 0.5, "b": 0.5, "c": 0.1})
        far = service.predict({"a": 9.0, "b": -7.0, "c": 5.0})
        assert "small_library" in near.risk_flags and "unfamiliar_job" not in near.risk_flags
        assert "unfamiliar_job" in far.risk_flags and "high_error_rate" in far.risk_flags


def test_predictor_routes(api):
    x, targets = library(45)
    for row, d, e, r in zip(x, targets["duration_s"], targets["error_rate"], targets["resources"]):
        body = {"features": {"a": row[0], "b": row[1], "c": row[2]}, "duration_s": d, "error_rate": e, "resources": r}
        assert api.post("/v1/workspaces/alpha/completed-jobs", json=body, headers=auth()).status_code == 201
    answer = api.post(
        "/v1/workspaces/alpha/predictions", json={"features": {"a": 0.3, "b": 0.3, "c": 0.3}}, headers=auth()
    )
    assert answer.status_code == 200, answer.text
    low, high = answer.json()["interval"]["duration_s"]
    assert low < answer.json()["estimate"]["duration_s"] < high
    wrong = api.post("/v1/workspaces/alpha/predictions", json={"features": {"z": 1}}, headers=auth())
    assert wrong.status_code == 422 and "features a, b, c" in wrong.json()["detail"]
    too_many = api.post(
        "/v1/workspaces/alpha/predictions", json={"features": {"a": 0, "b": 0, "c": 0}, "k": 900}, headers=auth()
    )
    assert too_many.status_code == 409
    assert (
        api.post("/v1/workspaces/beta/predictions", json={"features": {"a": 0}}, headers=auth("beta")).status_code
        == 409
    )


@pytest.mark.parametrize("n,confidence", [(100, 0.9), (1000, 0.9), (200, 0.8), (500, 0.95)])
def test_calibration_size_makes_the_expected_coverage_exact(n, confidence):
    """ceil((m + 1) c) / (m + 1) = c exactly: the expected coverage of split conformal (Lei et al. 2018)."""
    from metalab.services.predictor import calibration_size

    m = calibration_size(n, PredictorConfig(confidence=confidence))
    assert m >= 0.25 * n - 0.5 and math.ceil(round((m + 1) * confidence, 9)) / (m + 1) == pytest.approx(confidence)
