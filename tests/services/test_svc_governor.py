"""Hyperparameter governor: EMA against pandas, rollback and cooldowns, bounds, and the cross-domain prior
against the Reptile interpolation written out by hand."""

import numpy as np
import pandas as pd
import pytest
import torch
from svc_helpers import auth

from metalab.adapt.outer_update import reptile_update
from metalab.services.errors import Conflict
from metalab.services.governor import (
    GovernorService,
    GovernorSettings,
    GovernorState,
    Knob,
    combine_priors,
    meta_reward,
    observe,
    propose,
)

KNOBS = [Knob("lr", "float", 1e-4, 0.1, 0.01), Knob("batch", "int", 8, 512, 64), Knob("cache", "bool")]


def fresh(**settings):
    start = {k.name: k.initial() for k in KNOBS}
    return GovernorState(KNOBS, GovernorSettings(**settings), dict(start), dict(start))


def test_reptile_update_is_the_interpolation_for_numpy_and_torch():
    start, adapted = np.array([0.0, 1.0]), np.array([[1.0, 1.0], [3.0, -1.0]])
    assert np.allclose(reptile_update(start, adapted, 0.5), [1.0, 0.5])
    assert np.allclose(reptile_update(start, adapted, 1.0, np.array([0.75, 0.25])), [1.5, 0.5])
    t = reptile_update(torch.zeros(2, 3), torch.ones(4, 2, 3), 0.25)
    assert torch.equal(t, torch.full((2, 3), 0.25))


def test_ema_matches_pandas_and_meta_reward_is_the_weighted_sum():
    rewards = np.random.default_rng(0).normal(1.0, 0.3, 50)
    state = fresh(ema_alpha=0.3)
    emas = []
    for r in rewards:
        observe(state, float(r))
        emas.append(state.ema)
    assert np.allclose(emas, pd.Series(rewards).ewm(alpha=0.3, adjust=False).mean())
    assert meta_reward(
        {"gain": 2.0, "stability": 0.5, "resource": 1.0}, {"gain": 1.0, "stability": 0.5, "resource": 0.3}
    ) == pytest.approx(2.0 + 0.25 - 0.3)


def test_values_are_clamped_into_bounds():
    state = fresh()
    values, clamped = propose(state, {"lr": 5.0, "batch": 3.4, "cache": 1})
    assert values == {"lr": 0.1, "batch": 8, "cache": True} and sorted(clamped) == ["batch", "lr"]
    with pytest.raises(Conflict, match="unknown knobs momentum"):
        propose(fresh(), {"momentum": 0.9})


def test_bad_change_is_rolled_back_and_cooldowns_hold():
    rng = np.random.default_rng(1)
    state = fresh(cooldown=5, rollback_cooldown=20, evaluation_window=10)
    for _ in range(30):
        observe(state, float(rng.normal(1.0, 0.1)))
    good = dict(state.values)
    propose(state, {"lr": 0.1})
    with pytest.raises(Conflict, match="cooling down"):
        propose(state, {"lr": 0.05})
    for step in range(1, 11):  # noqa: B007 (read after the loop: the step of the rollback)
        if observe(state, float(rng.normal(0.0, 0.1))) == "rollback":  # the change costs a whole unit of reward
            break
    assert step <= 3 and state.values == good
    assert state.cooldown_until - state.updates == 20


def test_good_change_is_accepted_and_pulls_the_domain_prior(sessions):
    with sessions() as session:
        service = GovernorService(session, "alpha")
        governor = service.create("trainer", "vision", KNOBS, GovernorSettings(evaluation_window=4, cooldown=2))
        for _ in range(5):
            service.telemetry(governor.id, {"gain": 1.0, "stability": 1.0, "resource": 0.0})
        service.change(governor.id, {"batch": 128}, "bigger batches")
        events = [service.telemetry(governor.id, {"gain": 1.2, "stability": 1.0, "resource": 0.0})[2] for _ in range(4)]
        assert events[-1] == "accepted"
        assert service.priors()[0].values["batch"] == 128  # the domain's first prior is the accepted snapshot
        newcomer = service.create("trainer2", "vision", KNOBS, GovernorSettings())
        assert GovernorState.from_dict(newcomer.state).values["batch"] == 128


def test_combined_prior_drops_outliers_and_weights_diversity():
    knobs = [Knob("a", "float", 0.0, 10.0), Knob("b", "float", 0.0, 1.0)]
    priors = {
        "d1": {"a": 2.0, "b": 0.2},
        "d2": {"a": 2.1, "b": 0.2},
        "d3": {"a": 2.0, "b": 0.25},
        "d4": {"a": 6.0, "b": 0.6},
        "d5": {"a": 2.2, "b": 0.18},
        "d6": {"a": 6.2, "b": 0.58},
        "junk": {"a": 10.0, "b": 1.0},
    }
    result = combine_priors({"a": 5.0, "b": 0.5}, priors, knobs, step_size=0.5)
    assert result.outliers == ["junk"]
    # by hand: d1, d2, d3, d5 lie within 0.1 of each other in unit coordinates (4 neighbours each, weight 1/4),
    # d4 and d6 form a pair (weight 1/2 each); normalised: cluster members 1/8 each, the pair 1/4 each
    assert result.weights == pytest.approx({"d1": 0.125, "d2": 0.125, "d3": 0.125, "d4": 0.25, "d5": 0.125, "d6": 0.25})
    unit = np.array([[0.2, 0.2], [0.21, 0.2], [0.2, 0.25], [0.6, 0.6], [0.22, 0.18], [0.62, 0.58]])
    target = 0.125 * unit[[0, 1, 2, 4]].sum(0) + 0.25 * unit[[3, 5]].sum(0)
    expected = np.array([0.5, 0.5]) + 0.5 * (target - np.array([0.5, 0.5]))
    assert [result.values["a"] / 10, result.values["b"]] == pytest.approx(expected.tolist())


def test_governor_routes(api):
    body = {
        "name": "g",
        "domain": "nlp",
        "knobs": {"lr": {"low": 0.0001, "high": 0.1, "default": 0.01}, "batch": {"type": "int", "low": 8, "high": 512}},
        "cooldown": 3,
    }
    created = api.post("/v1/workspaces/alpha/governors", json=body, headers=auth())
    assert created.status_code == 201, created.text
    gid = created.json()["id"]
    changed = api.post(f"/v1/workspaces/alpha/governors/{gid}/changes", json={"values": {"lr": 7}}, headers=auth())
    assert (
        changed.status_code == 200
        and changed.json()["governor"]["values"]["lr"] == 0.1
        and changed.json()["clamped"] == ["lr"]
    )
    again = api.post(f"/v1/workspaces/alpha/governors/{gid}/changes", json={"values": {"lr": 0.02}}, headers=auth())
    assert again.status_code == 409 and "cooling down" in again.json()["detail"]
    update = api.post(
        f"/v1/workspaces/alpha/governors/{gid}/telemetry",
        json={"gain": 1, "stability": 1, "resource": 0},
        headers=auth(),
    )
    assert update.status_code == 200 and update.json()["reward"] == pytest.approx(1.5)
    prior = api.put(
        "/v1/workspaces/alpha/priors/nlp",
        json={"knobs": body["knobs"], "values": {"lr": 0.05, "batch": 32}},
        headers=auth(),
    )
    assert prior.status_code == 200
    combined = api.post("/v1/workspaces/alpha/priors/combine", json={}, headers=auth())
    assert combined.status_code == 200 and combined.json()["values"]["batch"] == 32
    assert api.get(f"/v1/workspaces/beta/governors/{gid}", headers=auth("beta")).status_code == 404
