"""HTTP API: auth on every route, idempotency, pagination, 4xx messages, the typed client (SQLite and PostgreSQL)."""

import re
from datetime import UTC

import pytest
from fastapi.routing import APIRoute
from svc_helpers import TOKENS, auth

from metalab.services.api import schemas as s
from metalab.services.api.client import ApiError, ServicesClient


def _seed(api):
    experiment = api.post(
        "/v1/workspaces/alpha/experiments", json={"name": "e", "variants": ["a", "b"]}, headers=auth()
    )
    recommendation = api.post(
        "/v1/workspaces/alpha/recommendations", json={"agent": "x", "type": "ops", "confidence": 0.7}, headers=auth()
    )
    assert experiment.status_code == 201 and recommendation.status_code == 201
    ids = {
        "experiment_id": experiment.json()["id"],
        "recommendation_id": recommendation.json()["id"],
        "agent": "x",
        "job": "trust",
    }
    return ids | _seed_learning_services(api)


LEARNING_BODIES = {
    "/v1/workspaces/{workspace}/strategies/{strategy_id}/outcomes": {"values": {"speed": 1.0}},
    "/v1/workspaces/{workspace}/governors/{governor_id}/changes": {"values": {"lr": 0.5}},
    "/v1/workspaces/{workspace}/governors/{governor_id}/telemetry": {"gain": 1, "stability": 1, "resource": 0},
    "/v1/workspaces/{workspace}/consensus/rounds/{round_id}/outcome": {"answer": "yes"},
}


def _seed_learning_services(api):
    """Ids for the issue-20 routes (strategy pool, ...) and the expert registry's."""
    profile = api.post(
        "/v1/workspaces/alpha/profiles",
        headers=auth(),
        json={"name": "p", "genes": {"batch": {"type": "int", "low": 1, "high": 8}}, "population_size": 5},
    )
    evolved = api.post(f"/v1/workspaces/alpha/profiles/{profile.json()['id']}/evolve", headers=auth())
    model = api.post(
        "/v1/workspaces/alpha/models/m1/versions",
        headers=auth(),
        json={"version": "v1", "artifact": "a", "reference": {"x": [float(i) for i in range(40)]}},
    )
    assert model.status_code == 201, model.text
    governor = api.post(
        "/v1/workspaces/alpha/governors",
        headers=auth(),
        json={"name": "g1", "domain": "d1", "knobs": {"lr": {"low": 0.0, "high": 1.0}}},
    )
    assert governor.status_code == 201, governor.text
    expert = api.post("/v1/workspaces/alpha/experts", headers=auth(), json={"name": "ex1", "skills": {"ml": 3}})
    assert expert.status_code == 201, expert.text
    round_ = api.post(
        "/v1/workspaces/alpha/consensus/rounds",
        headers=auth(),
        json={"question": "q", "proposals": [{"expert": "ex1", "answer": "yes"}]},
    )
    assert round_.status_code == 201, round_.text
    return {
        "name": "ex1",
        "round_id": round_.json()["id"],
        "profile_id": profile.json()["id"],
        "strategy_id": evolved.json()["pending"][0]["id"],
        "model": "m1",
        "governor_id": governor.json()["id"],
        "domain": "d1",
    }


def _workspace_routes(api):
    for route in api.app.routes:
        if isinstance(route, APIRoute) and "{workspace}" in route.path:
            for method in route.methods:
                yield method, route.path


def _url(path, workspace, ids):
    return re.sub(r"\{(\w+)\}", lambda m: workspace if m.group(1) == "workspace" else str(ids[m.group(1)]), path)


def test_every_workspace_route_refuses_missing_wrong_and_foreign_tokens(api):
    ids = _seed(api)
    routes = list(_workspace_routes(api))
    assert len(routes) >= 15
    for method, path in routes:
        url = _url(path, "alpha", ids)
        body = {} if method == "POST" else None
        assert api.request(method, url, json=body).status_code == 401, (method, path, "no token")
        wrong = {"Authorization": "Bearer not-a-real-token-000000"}
        assert api.request(method, url, json=body, headers=wrong).status_code == 401, (method, path, "wrong token")
        assert api.request(method, url, json=body, headers={"Authorization": "Basic abc"}).status_code == 401
        assert api.request(method, url, json=body, headers=auth("beta")).status_code == 403, (
            method,
            path,
            "other workspace",
        )
        if "_id}" in path:  # alpha's ids asked for through beta's own workspace: not found
            response = api.request(method, _url(path, "beta", ids), json=_valid_body(path), headers=auth("beta"))
            assert response.status_code == 404, (method, path, response.text)


def _valid_body(path):
    if path in LEARNING_BODIES:
        return LEARNING_BODIES[path]
    if path.endswith("/outcomes"):
        return {"variant": "a", "value": 1}
    if path.endswith("/evaluation"):
        return {"overall_quality": 0.5}
    if path.endswith("/complete"):
        return {}
    return None


def test_idempotent_writes_replay_and_refuse_a_changed_body(api):
    ids = _seed(api)
    url = f"/v1/workspaces/alpha/experiments/{ids['experiment_id']}/outcomes"
    headers = {**auth(), "Idempotency-Key": "outcome-1"}
    first = api.post(url, json={"variant": "a", "value": 1}, headers=headers)
    again = api.post(url, json={"variant": "a", "value": 1}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = api.post(url, json={"variant": "b", "value": 1}, headers=headers)
    assert changed.status_code == 409 and "different request" in changed.json()["detail"]
    same_key_other_workspace = api.post(
        "/v1/workspaces/beta/experiments",
        json={"name": "e", "variants": ["a", "b"]},
        headers={**auth("beta"), "Idempotency-Key": "outcome-1"},
    )
    assert same_key_other_workspace.status_code == 201  # keys are per workspace
    listed = api.get(url, headers=auth()).json()["items"]
    assert len(listed) == 1


def test_pagination_visits_every_item_once(api):
    for i in range(7):
        api.post("/v1/workspaces/alpha/experiments", json={"name": f"e{i}", "variants": ["a", "b"]}, headers=auth())
    seen, cursor = [], 0
    while True:
        page = api.get("/v1/workspaces/alpha/experiments", params={"limit": 3, "cursor": cursor}, headers=auth()).json()
        seen += [e["name"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == [f"e{i}" for i in range(7)]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/experiments", {"name": "x", "variants": ["only"]}),
        ("POST", "/experiments", {"name": "x", "variants": ["a", "a"]}),
        ("POST", "/experiments", {"name": "x\u0000", "variants": ["a", "b"]}),
        ("POST", "/experiments", {"name": "x", "variants": ["a", "b"], "alpha": 2}),
        ("POST", "/experiments", {"name": "x", "variants": ["a", "b"], "surprise": 1}),
        ("GET", "/experiments/99999999999999999999", None),
        ("GET", "/experiments/0", None),
        (
            "GET",
            "/experiments/2147483648",
            None,
        ),  # above SQL INTEGER: PostgreSQL would overflow (found by schemathesis)
        ("GET", "/experiments?cursor=4611686018427387903", None),
        (
            "POST",
            "/experiments",
            {"name": "x", "variants": ["a", "b"], "mixture_scale": 1e-308},
        ),  # tau^2 underflows to 0
        ("POST", "/experiments", {"name": "x", "variants": ["a", "b"], "max_outcomes": 10**12}),
        ("GET", "/experiments?limit=0", None),
        ("POST", "/recommendations", {"agent": "x", "type": "t", "confidence": 1.5}),
        ("POST", "/recommendations", {"agent": "x\u0000", "type": "t", "confidence": 0.5}),  # NUL in a text column
        ("POST", "/recommendations", {"agent": "x", "type": "t", "confidence": "0.5"}),  # a string is not a number
        ("POST", "/completed-jobs", {"features": {"a": 1.0}, "duration_s": 1.0, "error_rate": False, "resources": 1}),
        ("POST", "/predictions", {"features": {"a": 1.0}, "k": 2.5}),
        ("POST", "/jobs/nope", None),
        ("GET", "/experiments/12345", None),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(api, method, path, body):
    response = api.request(method, "/v1/workspaces/alpha" + path, json=body, headers=auth())
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_nul_in_free_form_json_is_stored_and_returned(api):
    """Free-form JSON is stored as JSON text on both backends, where a NUL is an escape, not a refusal."""
    content = {"k\u0000": ["a\u0000b", {"c": "\u0000"}]}
    body = {"agent": "x", "type": "t", "confidence": 0.5, "content": content}
    created = api.post("/v1/workspaces/alpha/recommendations", json=body, headers=auth())
    assert created.status_code == 201, created.text
    stored = api.get(f"/v1/workspaces/alpha/recommendations/{created.json()['id']}", headers=auth())
    assert stored.json()["content"] == content


def test_an_int_field_takes_an_integral_float_as_json_schema_does(api):
    ok = api.post("/v1/workspaces/alpha/predictions", json={"features": {"a": 1.0}, "k": 2.0}, headers=auth())
    assert ok.status_code != 422, ok.text  # 2.0 is JSON Schema's integer 2 (409: no jobs recorded yet is fine)


def test_non_json_body_and_nan_are_refused(api):
    url = "/v1/workspaces/alpha/experiments"
    assert (
        api.post(url, content=b"{not json", headers={**auth(), "Content-Type": "application/json"}).status_code == 422
    )
    ids = _seed(api)
    nan = api.post(
        f"{url}/{ids['experiment_id']}/outcomes",
        content=b'{"variant": "a", "value": NaN}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert nan.status_code == 422


def test_typed_client_round_trip(api):
    client = ServicesClient("http://testserver", "alpha", TOKENS["alpha"], transport=api._transport)
    experiment = client.create_experiment(s.ExperimentCreate(name="c", variants=["a", "b"], min_samples_per_variant=2))
    variant = client.assign(experiment.id).variant
    outcome = client.record_outcome(experiment.id, variant, 1, idempotency_key="k1")
    assert client.record_outcome(experiment.id, variant, 1, idempotency_key="k1").id == outcome.id
    assert [o.id for o in client.all_outcomes(experiment.id)] == [outcome.id]
    assert client.analysis(experiment.id).outcomes == 1
    rec = client.recommend(s.RecommendationCreate(agent="bot", type="ops", confidence=0.8, action="restart"))
    client.evaluate(rec.id, s.EvaluationCreate(overall_quality=0.9, scores={"timeliness": 1.0}))
    assert client.trust("bot").evaluations == 1
    assert client.run_job("learning-cycle").summary["agents"] == 1
    assert isinstance(client.patterns(), s.PatternsOut)
    with pytest.raises(ApiError) as error:
        client.experiment(10**6)
    assert error.value.status_code == 404
    foreign = ServicesClient("http://testserver", "alpha", TOKENS["beta"], transport=api._transport)
    with pytest.raises(ApiError) as error:
        foreign.experiments()
    assert error.value.status_code == 403


def test_openapi_schema_declares_bearer_auth(api):
    schema = api.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert api.get("/health").json() == {"status": "ok"}


def test_timestamps_come_back_in_utc_with_an_offset(api):
    """Issue 38: SQLite returned naive timestamps on read; both backends now give UTC with an offset."""

    from metalab.services.store.models import ExperimentOutcome

    created = api.post("/v1/workspaces/alpha/experiments", json={"name": "tz", "variants": ["a", "b"]}, headers=auth())
    experiment_id = created.json()["id"]
    outcome = api.post(
        f"/v1/workspaces/alpha/experiments/{experiment_id}/outcomes", json={"variant": "a", "value": 1}, headers=auth()
    )
    read = api.get(f"/v1/workspaces/alpha/experiments/{experiment_id}/outcomes", headers=auth()).json()["items"][0]
    again = api.get(f"/v1/workspaces/alpha/experiments/{experiment_id}", headers=auth()).json()
    for stamp in (created.json()["created_at"], again["created_at"], outcome.json()["created_at"], read["created_at"]):
        assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp
    assert read["created_at"] == outcome.json()["created_at"] and again["created_at"] == created.json()["created_at"]
    with api.app.state.sessions() as session:
        stored = session.get(ExperimentOutcome, read["id"])
        assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset() == UTC.utcoffset(None)
