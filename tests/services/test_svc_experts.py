"""Expert registry and learned consensus over HTTP (issue 35.3): registry, teams, rounds, outcomes, auth."""

from __future__ import annotations

import math

import pytest
from svc_helpers import auth

BASE = "/v1/workspaces/alpha"


def _register(api, name: str, skills: dict[str, int], workspace: str = "alpha") -> dict:
    response = api.post(
        f"/v1/workspaces/{workspace}/experts", json={"name": name, "skills": skills}, headers=auth(workspace)
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_registry_and_team(api):
    _register(api, "ana", {"nlp": 4, "stats": 2})
    _register(api, "bo", {"vision": 5})
    _register(api, "cy", {"nlp": 5, "vision": 3})
    again = api.post(f"{BASE}/experts", json={"name": "ana", "skills": {}}, headers=auth())
    assert again.status_code == 409 and "already registered" in again.json()["detail"]
    assert api.get(f"{BASE}/experts/ana", headers=auth()).json()["record"] == 0.5
    team = api.post(f"{BASE}/teams", json={"required_skills": {"nlp": 5, "vision": 3}}, headers=auth())
    assert team.status_code == 200 and [m["name"] for m in team.json()["members"]] == ["cy"]
    team = api.post(f"{BASE}/teams", json={"required_skills": {"nlp": 4, "vision": 5, "stats": 1}}, headers=auth())
    assert sorted(m["name"] for m in team.json()["members"]) == ["ana", "bo"]
    nobody = api.post(f"{BASE}/teams", json={"required_skills": {"rl": 1}}, headers=auth())
    assert nobody.status_code == 409 and "no registered expert covers rl" in nobody.json()["detail"]
    page = api.get(f"{BASE}/experts?limit=2", headers=auth()).json()
    assert [e["name"] for e in page["items"]] == ["ana", "bo"] and page["next_cursor"] is not None


def test_round_outcome_updates_weights_once(api):
    for name in ("ana", "bo", "cy"):
        _register(api, name, {"nlp": 3})
    body = {
        "question": "which loss?",
        "method": "weighted",
        "proposals": [
            {"expert": "ana", "answer": "ce", "confidence": 0.9},
            {"expert": "bo", "answer": "mse", "confidence": 0.6},
        ],
        "critiques": [{"expert": "cy", "proposal": 1, "agreement": 0.7, "comment": "mse is fine here"}],
    }
    round_ = api.post(f"{BASE}/consensus/rounds", json=body, headers=auth())
    assert round_.status_code == 201, round_.text
    out = round_.json()
    assert (out["decision"], out["confidence"]) == ("mse", pytest.approx(2 / 3))
    assert out["positions"] == {"ana": "ce", "bo": "mse", "cy": "mse"}
    assert out["created_at"].endswith(("Z", "+00:00"))
    resolved = api.post(f"{BASE}/consensus/rounds/{out['id']}/outcome", json={"answer": "ce"}, headers=auth())
    assert resolved.status_code == 200 and resolved.json()["correct"] is False
    weights = {e["name"]: (e["weight"], e["correct"], e["resolved"]) for e in resolved.json()["experts"]}
    assert weights == {"ana": (1.0, 1, 1), "bo": (0.5, 0, 1), "cy": (0.5, 0, 1)}
    # logistic vote weights: one gradient step of size 1 on -log softmax(tallies ce=1, mse=2)[ce]
    p_ce = math.exp(1) / (math.exp(1) + math.exp(2))
    vote = {e["name"]: e["vote_weight"] for e in resolved.json()["experts"]}
    assert vote == pytest.approx({"ana": 1 + (1 - p_ce), "bo": 1 - (1 - p_ce), "cy": 1 - (1 - p_ce)})
    second = api.post(f"{BASE}/consensus/rounds/{out['id']}/outcome", json={"answer": "ce"}, headers=auth())
    assert second.status_code == 409
    # the learned weights now decide the same split the other way
    again = api.post(f"{BASE}/consensus/rounds", json=body, headers=auth()).json()
    assert again["decision"] == "ce" and again["confidence"] == pytest.approx(1 / 2)  # tie on weight, confidence


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"question": "q", "proposals": []}, "proposals"),
        ({"question": "q", "proposals": [{"expert": "ghost", "answer": "x"}]}, "unregistered experts: 'ghost'"),
        (
            {
                "question": "q",
                "method": "moderator",
                "moderator": "ana",
                "proposals": [{"expert": "bo", "answer": "x"}],
            },
            "moderator 'ana' made no proposal",
        ),
        (
            {
                "question": "q",
                "proposals": [{"expert": "ana", "answer": "x"}],
                "critiques": [{"expert": "bo", "proposal": 4, "agreement": 0.5}],
            },
            "numbered 0..0",
        ),
    ],
)
def test_bad_rounds_get_a_4xx_with_a_message(api, body, message):
    for name in ("ana", "bo"):
        _register(api, name, {"nlp": 3})
    response = api.post(f"{BASE}/consensus/rounds", json=body, headers=auth())
    assert 400 <= response.status_code < 500 and message in response.json()["detail"], response.text


def test_workspaces_are_separate(api):
    _register(api, "ana", {"nlp": 3})
    assert api.get(f"{BASE}/experts/ana", headers=auth("beta")).status_code == 403
    assert api.get("/v1/workspaces/beta/experts/ana", headers=auth("beta")).status_code == 404
    assert api.get(f"{BASE}/experts/ana").status_code == 401
    body = {"question": "q", "proposals": [{"expert": "ana", "answer": "x"}]}
    round_ = api.post(f"{BASE}/consensus/rounds", json=body, headers=auth()).json()
    assert api.get(f"/v1/workspaces/beta/consensus/rounds/{round_['id']}", headers=auth("beta")).status_code == 404
