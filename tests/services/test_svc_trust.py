"""Trust scores against a hand computation, on simulated agents, and through the store."""

import numpy as np
import pytest
from scipy import stats

from experiments.services.simulate import outcomes_until_distrusted, trust_ranking
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.trust import EvaluatedOutcome, TrustConfig, TrustService, compute_trust


def test_trust_by_hand_for_two_outcomes():
    config = TrustConfig(half_life=1.0, confidence_k=2.0)
    history = [EvaluatedOutcome(False, 0.2, 0.9, None), EvaluatedOutcome(True, 0.8, 0.6, None)]
    w = np.array([0.5, 1.0])  # the older outcome weighs half
    accuracy = (w @ [0, 1]) / w.sum()
    mean_q = (w @ [0.2, 0.8]) / w.sum()
    consistency = 1 - np.sqrt((w @ (np.array([0.2, 0.8]) - mean_q) ** 2) / w.sum()) / 0.5
    reliability = 1 - (w @ [0.81, 0.16]) / w.sum()
    base = (0.40 * accuracy + 0.25 * consistency + 0.20 * reliability) / 0.85  # no timeliness: renormalised
    report = compute_trust("a", history, config)
    assert report.trust == pytest.approx(base * 2 / 4)
    assert report.dimensions["timeliness"] is None and report.confidence_factor == pytest.approx(0.5)


def test_ranking_follows_true_accuracy():
    accuracies = [0.55, 0.65, 0.75, 0.85, 0.95]
    trust = trust_ranking(accuracies, outcomes=150, config=TrustConfig(), seed=0)
    assert stats.spearmanr(accuracies, trust).statistic >= 0.9


def test_confidence_factor_grows_with_evidence():
    rng_outcome = EvaluatedOutcome(True, 0.9, 0.9, 0.9)
    small = compute_trust("a", [rng_outcome] * 5, TrustConfig())
    large = compute_trust("a", [rng_outcome] * 100, TrustConfig())
    assert small.confidence_factor < large.confidence_factor and small.trust < large.trust


def test_an_agent_that_turns_bad_loses_trust_quickly():
    steps = outcomes_until_distrusted(0.9, 0.3, before=200, after=200, config=TrustConfig(), seed=0)
    assert steps is not None and steps <= 40


def test_trend_and_boost():
    declining = [EvaluatedOutcome(q > 0.5, q, 0.7, None) for q in np.linspace(0.95, 0.1, 60)]
    report = compute_trust("a", declining, TrustConfig())
    assert report.trend == "declining"
    assert report.boost < 1.0 and TrustConfig().boost_strength >= 1 - report.boost
    steady = compute_trust("b", [EvaluatedOutcome(True, 0.9, 0.9, 1.0)] * 60, TrustConfig())
    assert steady.trend == "stable" and steady.trusted and steady.boost > 1.0


def test_weights_are_validated():
    with pytest.raises(Unprocessable):
        TrustConfig(weights={"accuracy": 1.0, "charisma": 1.0})


def test_service_records_evaluates_and_ranks(sessions):
    rng = np.random.default_rng(0)
    with sessions() as session:
        service = TrustService(session, "alpha")
        for agent, accuracy in (("good", 0.9), ("bad", 0.4)):
            for _ in range(60):
                rec, _ = service.record(agent, "ops", 0.8, {"action": "restart"}, subject="s")
                ok = bool(rng.random() < accuracy)
                service.evaluate(rec.id, 0.9 if ok else 0.1, {"timeliness": 0.8}, ok)
        session.commit()
        assert rec.action == "restart"
        with pytest.raises(Conflict):
            service.evaluate(rec.id, 0.5)
        session.rollback()
        with pytest.raises(NotFound):
            TrustService(session, "beta").evaluate(rec.id, 0.5)
        ranking = service.all_trust()
        assert [r.agent for r in ranking] == ["good", "bad"]
        assert [r.agent for r in service.trusted()] == ["good"]
        assert ranking[0].dimensions["timeliness"] == pytest.approx(0.8)
        assert TrustService(session, "beta").all_trust() == []
        assert service.snapshot() == 2 and service.snapshot() == 2
