"""The typed client's issue-20 methods against the real app: every method once, answers parsed into the schemas."""

import numpy as np
import pytest
from svc_helpers import TOKENS

from metalab.services.api import schemas as s
from metalab.services.api.client import ApiError, ServicesClient


def test_learning_services_through_the_typed_client(api):
    client = ServicesClient("http://testserver", "alpha", TOKENS["alpha"], transport=api._transport)
    profile = client.create_profile(
        s.ProfileCreate(name="p", genes={"batch": s.GeneSpec(type="int", low=1, high=64)}, population_size=5)
    )
    pending = client.evolve(profile.id).pending
    for i, strategy in enumerate(pending):
        client.record_strategy_outcome(strategy.id, {"speed": float(i)})
    evolved = client.evolve(profile.id, idempotency_key="evolve-1")
    assert client.evolve(profile.id, idempotency_key="evolve-1").profile.generation == evolved.profile.generation == 1
    assert client.profile(profile.id).default_strategy.id == pending[-1].id
    assert len(client.strategies(profile.id, role="pending").items) == 5
    child = f"strategy:{evolved.pending[0].id}"
    assert client.ancestors(child).ancestors
    client.add_edge("error_pattern:oom", "resolved_by", "solution:smaller-batch")
    assert client.path("error_pattern:oom", "solution:smaller-batch").connected
    assert client.export_graph("graphml").startswith("<?xml")

    rng = np.random.default_rng(0)
    for _ in range(40):
        x = float(rng.uniform())
        client.record_completed_job(
            s.CompletedJobCreate(features={"size": x}, duration_s=10 + 5 * x, error_rate=0.01, resources=1.0 + x)
        )
    prediction = client.predict(s.PredictionRequest(features={"size": 0.5}))
    assert (
        prediction.interval["duration_s"][0]
        <= prediction.estimate["duration_s"]
        <= prediction.interval["duration_s"][1]
    )

    client.publish_transfer_profile(s.TransferProfileCreate(features={"size": 1.0}, metrics={"batch": 32.0}))
    assert client.privacy_budget().spent_epsilon == 0.0
    assert client.transfer_cohort("batch").enough_for_insights is False
    with pytest.raises(ApiError) as error:
        client.insight(s.InsightRequest(metric="batch", lower=0, upper=64))
    assert error.value.status_code == 409

    reference = {"x": [float(v) for v in rng.normal(0, 1, 100)]}
    client.register_model_version(
        "m", s.ModelVersionCreate(version="v1", metrics={"acc": 0.9}, artifact="a", reference=reference)
    )
    client.register_model_version(
        "m", s.ModelVersionCreate(version="v2", metrics={"acc": 0.8}, artifact="b", reference=reference)
    )
    assert client.check_drift("m", {"x": [float(v) for v in rng.normal(0, 1, 100)]}).level in ("none", "warning")
    assert client.rollback("m", "v1").metrics == {"acc": 0.9}
    assert client.model("m").active_version == "v1"
    assert client.model_events("m").items[-1].kind == "rollback"

    governor = client.create_governor(
        s.GovernorCreate(name="g", domain="d", knobs={"lr": s.KnobSpec(low=0.0, high=1.0)})
    )
    assert client.change_knobs(governor.id, {"lr": 2.0}).clamped == ["lr"]
    assert client.governor_telemetry(governor.id, 1.0, 1.0, 0.0).reward == pytest.approx(1.5)
    assert client.governor(governor.id).updates == 1
    assert [e.kind for e in client.governor_events(governor.id).items] == ["change"]
    client.set_prior("d", s.PriorCreate(knobs={"lr": s.KnobSpec(low=0.0, high=1.0)}, values={"lr": 0.25}))
    assert client.combine_priors().values == {"lr": 0.25}
    assert [p.domain for p in client.priors()] == ["*", "d"]
