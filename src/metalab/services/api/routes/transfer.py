"""Transfer insights: workspace profiles and differentially private means over similar workspaces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from metalab.services.api import schemas as s
from metalab.services.api.common import ERRORS, V1, IdempotencyKey, Workspace_, cross_field, idempotent_write
from metalab.services.api.common import sessions_for as sessions
from metalab.services.transfer import TransferService

router = APIRouter(prefix=V1 + "/transfer", tags=["transfer insights"], responses=ERRORS)


@router.post("/profile", response_model=s.TransferProfileOut)
def publish_transfer_profile(
    request: Request, workspace: Workspace_, body: s.TransferProfileCreate, key: IdempotencyKey = None
):
    def write(db):
        return s.TransferProfileOut.model_validate(TransferService(db, workspace).publish(**body.model_dump()))

    return idempotent_write(request, workspace, key, body, write)


@router.get("/budget", response_model=s.BudgetOut)
def privacy_budget(request: Request, workspace: Workspace_):
    with sessions(request)() as db:
        return TransferService(db, workspace).budget()


@router.get("/cohort", response_model=s.CohortOut)
def transfer_cohort(
    request: Request,
    workspace: Workspace_,
    metric: Annotated[s.GeneName, Query()],
    min_similarity: Annotated[float, Query(ge=-1.0, le=1.0)] = 0.8,
):
    """Whether enough similar workspaces share ``metric`` for an insight (no names, no exact count)."""
    with sessions(request)() as db:
        return s.CohortOut(
            metric=metric, enough_for_insights=TransferService(db, workspace).enough_similar(metric, min_similarity)
        )


@router.post("/insights", response_model=s.InsightOut, openapi_extra=cross_field("lower < upper; 422 otherwise"))
def transfer_insight(request: Request, workspace: Workspace_, body: s.InsightRequest, key: IdempotencyKey = None):
    """A differentially private mean over similar workspaces (OpenDP Gaussian mechanism), charged to each
    contributor's privacy budget; 403 once a contributor's budget would be exceeded."""

    def write(db):
        release, minimum = TransferService(db, workspace).insight(**body.model_dump())
        return s.InsightOut(metric=body.metric, min_workspaces=minimum, **release.__dict__)

    return idempotent_write(request, workspace, key, body, write)
