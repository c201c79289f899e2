"""Experiments: create, list, assign a variant, record and list outcomes, analyse, complete."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from sqlalchemy import select

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
from metalab.services.experiments import ExperimentService
from metalab.services.store.models import ExperimentOutcome, Variant

router = APIRouter(prefix=V1 + "/experiments", tags=["experiments"], responses=ERRORS)


@router.post("", status_code=201, response_model=s.ExperimentOut)
def create_experiment(request: Request, workspace: Workspace_, body: s.ExperimentCreate, key: IdempotencyKey = None):
    return idempotent_write(
        request, workspace, key, body, lambda db: s.ExperimentOut.of(ExperimentService(db, workspace).create(body))
    )


@router.get("", response_model=s.Page[s.ExperimentOut])
def list_experiments(request: Request, workspace: Workspace_, limit: Limit = 50, cursor: Cursor = 0):
    with sessions(request)() as db:
        found = ExperimentService(db, workspace).list(limit, cursor)
        return page([s.ExperimentOut.of(e) for e in found], [e.id for e in found], limit)


@router.get("/{experiment_id}", response_model=s.ExperimentOut)
def get_experiment(request: Request, workspace: Workspace_, experiment_id: Id):
    with sessions(request)() as db:
        return s.ExperimentOut.of(ExperimentService(db, workspace).get(experiment_id))


@router.post("/{experiment_id}/assignments", response_model=s.AssignmentOut)
def assign(request: Request, workspace: Workspace_, experiment_id: Id):
    """The variant the next unit should get, by the experiment's allocation policy (writes nothing).

    A POST (each call draws anew), but it only reads: a read-only session, never queued behind the writers.
    """
    with request.app.state.read_sessions() as db:
        experiment, variant = ExperimentService(db, workspace).assign(experiment_id, np.random.default_rng())
        return s.AssignmentOut(experiment_id=experiment.id, variant=variant, experiment_status=experiment.status)


@router.post("/{experiment_id}/outcomes", status_code=201, response_model=s.OutcomeOut)
def record_outcome(
    request: Request, workspace: Workspace_, experiment_id: Id, body: s.OutcomeCreate, key: IdempotencyKey = None
):
    def write(db):
        o = ExperimentService(db, workspace).record_outcome(experiment_id, body.variant, body.value, body.unit)
        return s.OutcomeOut(experiment_id=experiment_id, **o.__dict__)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/{experiment_id}/outcomes", response_model=s.Page[s.OutcomeOut])
def list_outcomes(request: Request, workspace: Workspace_, experiment_id: Id, limit: Limit = 50, cursor: Cursor = 0):
    with sessions(request)() as db:
        e = ExperimentService(db, workspace).get(experiment_id)
        rows = db.execute(
            select(ExperimentOutcome, Variant.name)
            .join(Variant, Variant.id == ExperimentOutcome.variant_id)
            .where(ExperimentOutcome.experiment_id == e.id, ExperimentOutcome.id > cursor)
            .order_by(ExperimentOutcome.id)
            .limit(limit)
        ).all()
        items = [
            s.OutcomeOut(
                id=o.id,
                experiment_id=e.id,
                variant=name,
                value=o.value,
                unit=o.unit,
                created_at=o.created_at,
                experiment_status=e.status,
                winner=e.winner,
            )
            for o, name in rows
        ]
        return page(items, [o.id for o, _ in rows], limit)


@router.get("/{experiment_id}/analysis", response_model=s.AnalysisOut)
def analyse(request: Request, workspace: Workspace_, experiment_id: Id):
    """Per-variant estimates with intervals, probability to be best, always-valid comparisons, the decision and
    why."""
    with sessions(request)() as db:
        experiment, analysis = ExperimentService(db, workspace).analyse(experiment_id)
        data = analysis.as_dict()
        data.pop("min_p_values")
        return s.AnalysisOut(experiment_id=experiment.id, status=experiment.status, **data)


@router.post("/{experiment_id}/complete", response_model=s.ExperimentOut)
def complete(
    request: Request, workspace: Workspace_, experiment_id: Id, body: s.CompleteRequest, key: IdempotencyKey = None
):
    def write(db):
        return s.ExperimentOut.of(ExperimentService(db, workspace).complete(experiment_id, body.winner, body.reason))

    return idempotent_write(request, workspace, key, body, write)
