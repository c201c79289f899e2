"""Recommendations, their evaluations, agents' trust, the learned patterns, and the maintenance jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from metalab.services import jobs
from metalab.services.api import schemas as s
from metalab.services.api.common import (
    ERRORS,
    V1,
    Cursor,
    Id,
    IdempotencyKey,
    Limit,
    Workspace_,
    idempotent_write,
    page,
)
from metalab.services.api.common import sessions_for as sessions
from metalab.services.patterns import PatternService
from metalab.services.trust import TrustReport, TrustService

router = APIRouter(prefix=V1, tags=["trust"], responses=ERRORS)


@router.post("/recommendations", status_code=201, response_model=s.RecommendationOut)
def create_recommendation(
    request: Request, workspace: Workspace_, body: s.RecommendationCreate, key: IdempotencyKey = None
):
    def write(db):
        fields = body.model_dump()
        fields["kind"] = fields.pop("type")
        recommendation, trust = TrustService(db, workspace).record(**fields)
        prediction = PatternService(db, workspace).predict_for(recommendation)
        return s.RecommendationOut.of(recommendation, False, trust, prediction)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/recommendations", response_model=s.Page[s.RecommendationOut])
def list_recommendations(
    request: Request,
    workspace: Workspace_,
    limit: Limit = 50,
    cursor: Cursor = 0,
    agent: Annotated[s.Name | None, Query()] = None,
):
    with sessions(request)() as db:
        found = TrustService(db, workspace).list(limit, cursor, agent)
        return page([s.RecommendationOut.of(r, r.evaluation is not None) for r in found], [r.id for r in found], limit)


@router.get("/recommendations/{recommendation_id}", response_model=s.RecommendationOut)
def get_recommendation(request: Request, workspace: Workspace_, recommendation_id: Id):
    with sessions(request)() as db:
        r = TrustService(db, workspace).get(recommendation_id)
        return s.RecommendationOut.of(r, r.evaluation is not None)


@router.post("/recommendations/{recommendation_id}/evaluation", status_code=201, response_model=s.EvaluationOut)
def evaluate(
    request: Request,
    workspace: Workspace_,
    recommendation_id: Id,
    body: s.EvaluationCreate,
    key: IdempotencyKey = None,
):
    def write(db):
        return TrustService(db, workspace).evaluate(recommendation_id, **body.model_dump())

    return idempotent_write(request, workspace, key, body, lambda db: s.EvaluationOut.model_validate(write(db)))


@router.get("/agents", response_model=list[TrustReport])
def list_trust(request: Request, workspace: Workspace_, limit: Limit = 100):
    """Every agent's trust, most trusted first (the first ``limit``)."""
    with sessions(request)() as db:
        return TrustService(db, workspace).all_trust()[:limit]


@router.get("/agents/{agent}/trust", response_model=TrustReport)
def agent_trust(request: Request, workspace: Workspace_, agent: Annotated[s.Name, Path()]):
    with sessions(request)() as db:
        return TrustService(db, workspace).agent_trust(agent)


@router.get("/trusted-agents", response_model=list[TrustReport])
def trusted_agents(
    request: Request, workspace: Workspace_, threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None
):
    with sessions(request)() as db:
        return TrustService(db, workspace).trusted(threshold)


@router.get("/patterns", response_model=s.PatternsOut)
def patterns(request: Request, workspace: Workspace_):
    """The stored patterns with their accuracy and coverage on the evaluated recommendations."""
    with sessions(request)() as db:
        service = PatternService(db, workspace)
        return s.PatternsOut(patterns=service.stored(), **service.model_quality())


@router.post("/jobs/{job}", response_model=s.JobOut, tags=["jobs"])
def run_job(
    request: Request,
    workspace: Workspace_,
    job: Annotated[Literal[tuple(jobs.JOBS)], Path(description="the job to run")],  # type: ignore[valid-type]
    key: IdempotencyKey = None,
):
    def write(db):
        return s.JobOut(job=job, workspace=workspace, summary=jobs.JOBS[job](db, workspace, jobs.RetentionPolicy()))

    return idempotent_write(request, workspace, key, None, write)
