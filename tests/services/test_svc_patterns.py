"""Pattern discovery recovers planted patterns and predicts held-out outcomes (small world; the script is bigger)."""

import numpy as np
import pytest

from metalab.services.patterns import PatternService, RecordView, _wilson_low, accuracy_and_coverage, discover
from metalab.services.simulate import pattern_key, planted_world
from metalab.services.trust import TrustService


def test_planted_patterns_are_found_and_predict_held_out_outcomes():
    train, test = planted_world(1200, seed=1), planted_world(400, seed=2)
    found = discover(train.records)
    keys = {pattern_key(p.kind, p.condition) for p in found}
    assert len(keys & train.planted) / len(keys) >= 0.8  # precision
    assert len(keys & train.planted) / len(train.planted) >= 0.8  # recall
    quality = accuracy_and_coverage(test.records, found)
    assert quality["accuracy"] >= 0.8 and quality["coverage"] >= 0.7


def test_no_patterns_in_coin_flips():
    rng = np.random.default_rng(0)
    records = [
        RecordView(f"agent{i % 5}", "ops", f"act{i % 7}", float(rng.uniform(0.3, 0.99)), 1, bool(rng.random() < 0.5))
        for i in range(2000)
    ]
    assert discover(records) == []


def test_confidence_is_the_wilson_lower_bound():
    z, n, k = 1.959963984540054, 50, 40
    p = k / n
    low = ((p + z * z / (2 * n)) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert _wilson_low(k, n) == pytest.approx(low)


def test_service_refresh_is_idempotent_and_predicts(sessions):
    world = planted_world(300, seed=3)
    with sessions() as session:
        trust = TrustService(session, "alpha")
        for i, r in enumerate(world.records):
            rec, _ = trust.record(r.agent, r.kind, r.confidence, {"action": r.action}, subject=f"x{i}")
            trust.evaluate(rec.id, 0.9 if r.success else 0.1, success=r.success)
        service = PatternService(session, "alpha")
        first = service.refresh()
        second = service.refresh()
        assert first == second and service.stored() == second and len(second) > 0
        rec, _ = trust.record("x", "ops", 0.5, {"action": "scale_down"})
        prediction = service.predict_for(rec)
        assert prediction is not None and prediction.kind == "failure_avoidance" and not prediction.predicts_success
        assert PatternService(session, "beta").stored() == []
