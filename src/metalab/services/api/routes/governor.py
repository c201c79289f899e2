"""Hyperparameter governor: knobs, telemetry with rollback, domain priors combined by Reptile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from metalab.services.api import schemas as s
from metalab.services.api.common import (
    ERRORS,
    V1,
    Cursor,
    Id,
    IdempotencyKey,
    Limit,
    Workspace_,
    cross_field,
    idempotent_write,
    page,
)
from metalab.services.api.common import sessions_for as sessions
from metalab.services.governor import Combination, GovernorService, GovernorSettings, GovernorState, Knob

router = APIRouter(prefix=V1, tags=["hyperparameter governor"], responses=ERRORS)
DomainPath = Annotated[s.ModelName, Path(description="domain name")]
KNOB_RULE = cross_field("every knob needs low <= high; 422 otherwise")


def knobs_of(spec: dict[str, s.KnobSpec]) -> list[Knob]:
    return [Knob(name, k.type, k.low, k.high, k.default) for name, k in spec.items()]


def governor_out(governor, state: GovernorState) -> s.GovernorOut:
    return s.GovernorOut(
        id=governor.id,
        name=governor.name,
        domain=governor.domain,
        values=state.values,
        good_values=state.good_values,
        ema=state.ema,
        updates=state.updates,
        cooldown_remaining=max(0, state.cooldown_until - state.updates),
        under_evaluation=state.change_at is not None,
    )


@router.post("/governors", status_code=201, response_model=s.GovernorOut, openapi_extra=KNOB_RULE)
def create_governor(request: Request, workspace: Workspace_, body: s.GovernorCreate, key: IdempotencyKey = None):
    fields = body.model_dump(exclude={"name", "domain", "knobs", "values"})
    settings = GovernorSettings(**fields)

    def write(db):
        governor = GovernorService(db, workspace).create(
            body.name, body.domain, knobs_of(body.knobs), settings, body.values
        )
        return governor_out(governor, GovernorState.from_dict(governor.state))

    return idempotent_write(request, workspace, key, body, write)


@router.get("/governors/{governor_id}", response_model=s.GovernorOut)
def get_governor(request: Request, workspace: Workspace_, governor_id: Id):
    with sessions(request)() as db:
        return governor_out(*GovernorService(db, workspace).get(governor_id))


@router.post("/governors/{governor_id}/changes", response_model=s.ChangeOut)
def change_knobs(
    request: Request, workspace: Workspace_, governor_id: Id, body: s.KnobChange, key: IdempotencyKey = None
):
    """Set knobs (clamped into their bounds); 409 while a cooldown runs."""

    def write(db):
        service = GovernorService(db, workspace)
        state, clamped = service.change(governor_id, body.values, body.reason)
        return s.ChangeOut(governor=governor_out(service.get(governor_id)[0], state), clamped=clamped)

    return idempotent_write(request, workspace, key, body, write)


@router.post("/governors/{governor_id}/telemetry", response_model=s.TelemetryOut)
def governor_telemetry(
    request: Request, workspace: Workspace_, governor_id: Id, body: s.TelemetryCreate, key: IdempotencyKey = None
):
    """One telemetry update: the meta-reward, its EMA, and a rollback or acceptance of the last change."""

    def write(db):
        service = GovernorService(db, workspace)
        state, reward, event = service.telemetry(governor_id, body.model_dump())
        return s.TelemetryOut(governor=governor_out(service.get(governor_id)[0], state), reward=reward, event=event)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/governors/{governor_id}/events", response_model=s.Page[s.GovernorEventOut])
def governor_events(request: Request, workspace: Workspace_, governor_id: Id, limit: Limit = 50, cursor: Cursor = 0):
    with sessions(request)() as db:
        found = GovernorService(db, workspace).events(governor_id, limit, cursor)
        return page([s.GovernorEventOut.model_validate(e) for e in found], [e.id for e in found], limit)


@router.get("/priors", response_model=list[s.PriorOut])
def list_priors(request: Request, workspace: Workspace_):
    """Every domain's prior and the combined one (domain ``*``)."""
    with sessions(request)() as db:
        return [s.PriorOut.model_validate(p) for p in GovernorService(db, workspace).priors()]


@router.put("/priors/{domain}", response_model=s.PriorOut, openapi_extra=KNOB_RULE)
def set_prior(
    request: Request, workspace: Workspace_, domain: DomainPath, body: s.PriorCreate, key: IdempotencyKey = None
):
    def write(db):
        prior = GovernorService(db, workspace).set_prior(domain, knobs_of(body.knobs), body.values)
        return s.PriorOut.model_validate(prior)

    return idempotent_write(request, workspace, key, body, write)


@router.post("/priors/combine", response_model=Combination)
def combine_priors(request: Request, workspace: Workspace_, body: s.CombineRequest, key: IdempotencyKey = None):
    """One Reptile step of the combined prior toward the diversity-weighted domains, outliers left out."""
    return idempotent_write(
        request, workspace, key, body, lambda db: GovernorService(db, workspace).combine(body.step_size)
    )
