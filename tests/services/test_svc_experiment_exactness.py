"""The append-only engine against the per-outcome engine it replaced (commit f804fb8), on recorded sequences.

tests/services/fixtures/experiment_sequences.json was written by record_experiment_sequences.py running
the old code: after every outcome its stored running minima, its final status and decision, and every 100 outcomes
its full analysis.
Here the same outcomes go through today's service one transaction each; p-values, running minima,
confidence sequences, intervals and decisions must agree to 1e-9 (the probability to be best was a Monte
Carlo of 20,000 draws there and is an integral here: it must agree within the Monte Carlo's error).
Three of the sequences have three variants, where the Bonferroni level alpha/2 changes the intervals,
the significance and when the experiment decides (continuous_control_wins completes at alpha/2 after 377
outcomes; at alpha it would have completed earlier).
"""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from metalab.services.experiments import ExperimentService, ExperimentSpec
from metalab.services.store.models import Experiment

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "experiment_sequences.json").read_text())
SCENARIOS = {s["spec"]["name"]: s for s in FIXTURE["scenarios"]}
TOL = 1e-9


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == pytest.approx(b, rel=TOL, abs=TOL)


def _check_analysis(new, old, where):
    assert new.outcomes == old["outcomes"], where
    assert (new.decision.decision, new.decision.winner, new.decision.reason) == (
        old["decision"]["decision"],
        old["decision"]["winner"],
        old["decision"]["reason"],
    ), where
    assert len(new.comparisons) == len(old["comparisons"]), where
    for c, o in zip(new.comparisons, old["comparisons"]):
        assert c.variant == o["variant"] and c.significant == o["significant"], where
        for key in ("difference", "interval", "p_value_now", "p_value"):
            assert _close(getattr(c, key), o[key]), f"{where}: {c.variant} {key} {getattr(c, key)} != {o[key]}"
    for e, o in zip(new.estimates, old["estimates"], strict=True):
        assert (e.name, e.count) == (o["name"], o["count"]), where
        assert _close(e.mean, o["mean"]) and _close(e.interval, o["interval"]), f"{where}: {e.name} {e.interval}"
        assert abs(e.probability_best - o["probability_best"]) < 0.012, f"{where}: {e.name} probability to be best"


def _replay(sessions, scenario):
    spec = ExperimentSpec(**scenario["spec"])
    with sessions() as session:
        experiment_id = ExperimentService(session, "alpha").create(spec).id
        session.commit()
    checks = {c["outcomes"]: c["analysis"] for c in scenario["checks"]}
    state = select(Experiment.status, Experiment.decision, Experiment.winner, Experiment.min_p_values).where(
        Experiment.id == experiment_id
    )
    last = len(scenario["outcomes"])
    for index, ((variant, value), old_min_p) in enumerate(zip(scenario["outcomes"], scenario["min_p"]), start=1):
        where = f"{spec.name} after outcome {index}"
        with sessions() as session:
            service = ExperimentService(session, "alpha")
            service.record_outcome(experiment_id, variant, value)
            session.commit()
            status, decision, winner, min_p = session.execute(state).one()
            expected = scenario["last"] if index == last else {"status": "running", "decision": None, "winner": None}
            assert (status, decision, winner) == (expected["status"], expected["decision"], expected["winner"]), where
            assert _close([min_p[name] for name in spec.variants[1:]], old_min_p), f"{where}: running minima"
            if index in checks:
                _check_analysis(service.analyse(experiment_id)[1], checks[index], where)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_append_only_engine_equals_the_per_outcome_engine(sqlite_sessions, name):
    _replay(sqlite_sessions, SCENARIOS[name])


def test_same_on_postgresql(sessions, store_url):
    if store_url.startswith("sqlite"):
        pytest.skip("the SQLite cases are the test above")
    _replay(sessions, SCENARIOS["continuous_control_wins"])
