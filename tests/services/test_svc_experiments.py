"""The experiment service through the store (SQLite and PostgreSQL) against the vectorised analysis."""

import numpy as np
import pytest
from scipy import stats

from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.experiments import ExperimentService, ExperimentSpec, look_p_values


def _feed(sessions, spec, data, workspace="alpha"):
    with sessions() as session:
        service = ExperimentService(session, workspace)
        experiment_id = service.create(spec).id
        session.commit()
    for variant, value in data:
        with sessions() as session:
            service = ExperimentService(session, workspace)
            if service.get(experiment_id).status != "running":
                break
            service.record_outcome(experiment_id, variant, value)
            session.commit()
    return experiment_id


def test_stored_running_minimum_equals_the_vectorised_analysis(sessions):
    rng = np.random.default_rng(0)
    data = [("a" if i % 2 == 0 else "b", float(rng.random() < (0.3 if i % 2 == 0 else 0.5))) for i in range(240)]
    spec = ExperimentSpec(name="lift", variants=["a", "b"], min_samples_per_variant=20, auto_complete=False)
    experiment_id = _feed(sessions, spec, data)
    count, total = np.zeros(2), np.zeros(2)
    running = 1.0
    for variant, value in data:
        arm = 0 if variant == "a" else 1
        count[arm] += 1
        total[arm] += value
        *_, p = look_p_values(count, total, total.copy(), True, spec.mixture_scale, spec.min_samples_per_variant)
        running = min(running, float(p[0]))
    with sessions() as session:
        _, analysis = ExperimentService(session, "alpha").analyse(experiment_id)
    assert analysis.comparisons[0].p_value == pytest.approx(running, rel=1e-9)
    a = analysis.estimates[0]
    wilson = stats.binomtest(int(total[0]), int(count[0])).proportion_ci(method="wilson")
    assert a.interval == pytest.approx((wilson.low, wilson.high))
    z, n, p = 1.959963984540054, count[0], total[0] / count[0]  # the Wilson interval written out
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
    )
    assert a.interval == pytest.approx((centre - half, centre + half))


def test_auto_completes_with_the_better_variant_among_three(sessions):
    rng = np.random.default_rng(1)
    means = {"control": 0.0, "worse": -0.2, "better": 0.8}
    names = list(means)
    data = [(names[i % 3], float(rng.normal(means[names[i % 3]], 1.0))) for i in range(3000)]
    spec = ExperimentSpec(
        name="mv", variants=names, outcome_type="continuous", min_samples_per_variant=30, mixture_scale=0.3
    )
    experiment_id = _feed(sessions, spec, data)
    with sessions() as session:
        experiment, analysis = ExperimentService(session, "alpha").analyse(experiment_id)
    assert experiment.status == "completed" and experiment.winner == "better" and experiment.decision == "winner"
    assert analysis.outcomes < 3000 and "beats the control" in analysis.decision.reason
    best = max(analysis.estimates, key=lambda e: e.probability_best)
    assert best.name == "better" and best.probability_best > 0.95


def test_minimised_metric_picks_the_lower_mean(sessions):
    rng = np.random.default_rng(2)
    data = [("old" if i % 2 == 0 else "new", float(rng.normal(1.0 if i % 2 == 0 else 0.5, 0.3))) for i in range(2000)]
    spec = ExperimentSpec(
        name="latency",
        variants=["old", "new"],
        outcome_type="continuous",
        maximize=False,
        min_samples_per_variant=20,
        mixture_scale=0.5,
    )
    experiment_id = _feed(sessions, spec, data)
    with sessions() as session:
        experiment, analysis = ExperimentService(session, "alpha").analyse(experiment_id)
    assert experiment.winner == "new"
    assert analysis.estimates[1].mean == pytest.approx(0.5, abs=0.1)
    assert analysis.comparisons[0].difference < 0  # reported in the metric's own units


def test_max_outcomes_ends_inconclusive(sessions):
    spec = ExperimentSpec(name="aa", variants=["a", "b"], min_samples_per_variant=5, max_outcomes=40)
    experiment_id = _feed(sessions, spec, [("a" if i % 2 else "b", float(i % 4 < 2)) for i in range(60)])
    with sessions() as session:
        experiment = ExperimentService(session, "alpha").get(experiment_id)
    assert experiment.decision == "inconclusive" and experiment.winner is None
    assert sum(v.count for v in experiment.variants) == 40


def test_bad_requests_and_other_workspaces(sessions):
    with sessions() as session:
        service = ExperimentService(session, "alpha")
        experiment_id = service.create(ExperimentSpec(name="e", variants=["a", "b"])).id
        session.commit()
        with pytest.raises(Conflict):
            service.create(ExperimentSpec(name="e", variants=["a", "b"]))
        session.rollback()
        with pytest.raises(Conflict, match="0 or 1"):
            service.record_outcome(experiment_id, "a", 0.5)
        session.rollback()
        with pytest.raises(NotFound, match="unknown variant"):
            service.record_outcome(experiment_id, "zzz", 1)
        session.rollback()
        with pytest.raises(NotFound, match="unknown winner"):
            service.complete(experiment_id, "zzz", None)
        session.rollback()
        with pytest.raises(Unprocessable):
            service.create(ExperimentSpec(name="one", variants=["a"]))
        with pytest.raises(NotFound):
            ExperimentService(session, "beta").get(experiment_id)
        service.complete(experiment_id, "b", "shipped")
        session.commit()
        with pytest.raises(Conflict, match="completed"):
            service.record_outcome(experiment_id, "a", 1)
        assert service.assign(experiment_id)[1] == "b"
