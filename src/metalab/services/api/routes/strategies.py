"""Strategy pool: profiles of genes and objectives, evolved by the core genetic algorithm."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

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
from metalab.services.strategies import Objective, ProfileSpec, StrategyPoolService

router = APIRouter(prefix=V1, tags=["strategy pool"], responses=ERRORS)
Role = Literal["pending", "default", "alternative", "retired"]


@router.post(
    "/profiles",
    status_code=201,
    response_model=s.ProfileOut,
    openapi_extra=cross_field("a float or int gene needs low < high (and low > 0 with log); 422 otherwise"),
)
def create_profile(request: Request, workspace: Workspace_, body: s.ProfileCreate, key: IdempotencyKey = None):
    spec = ProfileSpec(
        name=body.name,
        genes={k: g.as_config() for k, g in body.genes.items()},
        objectives=[Objective(o.name, o.goal) for o in body.objectives],
        population_size=body.population_size,
        survival_fraction=body.survival_fraction,
        seed=body.seed,
    )

    def write(db):
        service = StrategyPoolService(db, workspace)
        return s.ProfileOut.of(service, service.create_profile(spec))

    return idempotent_write(request, workspace, key, body, write)


@router.get("/profiles/{profile_id}", response_model=s.ProfileOut)
def get_profile(request: Request, workspace: Workspace_, profile_id: Id):
    with sessions(request)() as db:
        service = StrategyPoolService(db, workspace)
        return s.ProfileOut.of(service, service.profile(profile_id))


@router.post("/profiles/{profile_id}/evolve", response_model=s.EvolveOut)
def evolve(request: Request, workspace: Workspace_, profile_id: Id, key: IdempotencyKey = None):
    """One generation of the core genetic algorithm: tell the pending strategies' outcomes, ask the next ones."""

    def write(db):
        service = StrategyPoolService(db, workspace)
        result = service.evolve(profile_id)
        return s.EvolveOut(
            profile=s.ProfileOut.of(service, result.profile),
            default=result.default,
            alternatives=result.alternatives,
            pending=result.pending,
        )

    return idempotent_write(request, workspace, key, None, write)


@router.get("/profiles/{profile_id}/strategies", response_model=s.Page[s.StrategyOut])
def list_strategies(
    request: Request,
    workspace: Workspace_,
    profile_id: Id,
    limit: Limit = 50,
    cursor: Cursor = 0,
    role: Annotated[Role | None, Query()] = None,
):
    with sessions(request)() as db:
        found = StrategyPoolService(db, workspace).strategies(profile_id, role, limit, cursor)
        return page([s.StrategyOut.model_validate(x) for x in found], [x.id for x in found], limit)


@router.post("/strategies/{strategy_id}/outcomes", status_code=201, response_model=s.StrategyOut)
def record_strategy_outcome(
    request: Request, workspace: Workspace_, strategy_id: Id, body: s.StrategyOutcomeCreate, key: IdempotencyKey = None
):
    def write(db):
        return s.StrategyOut.model_validate(StrategyPoolService(db, workspace).record_outcome(strategy_id, body.values))

    return idempotent_write(request, workspace, key, body, write)
