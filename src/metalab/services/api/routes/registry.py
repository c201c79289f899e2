"""Model registry: versions with reference samples, drift checks, rollback, and the event log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from metalab.services.api import schemas as s
from metalab.services.api.common import ERRORS, V1, Cursor, IdempotencyKey, Limit, Workspace_, idempotent_write, page
from metalab.services.api.common import sessions_for as sessions
from metalab.services.registry import ModelRegistryService

router = APIRouter(prefix=V1 + "/models/{model}", tags=["model registry"], responses=ERRORS)
ModelPath = Annotated[s.ModelName, Path(description="model name")]


def version_out(v, active: str | None) -> s.ModelVersionOut:
    return s.ModelVersionOut.model_validate({**s.columns(v), "active": v.version == active})


@router.post("/versions", status_code=201, response_model=s.ModelVersionOut)
def register_model_version(
    request: Request, workspace: Workspace_, model: ModelPath, body: s.ModelVersionCreate, key: IdempotencyKey = None
):
    def write(db):
        service = ModelRegistryService(db, workspace)
        v = service.register(model, **body.model_dump())
        return version_out(v, service.model(model).active_version)

    return idempotent_write(request, workspace, key, body, write)


@router.get("", response_model=s.ModelOut)
def get_model(request: Request, workspace: Workspace_, model: ModelPath):
    with sessions(request)() as db:
        service = ModelRegistryService(db, workspace)
        active = service.model(model).active_version
        versions = [version_out(v, active) for v in service.versions(model)]
        return s.ModelOut(name=model, active_version=active, versions=versions)


@router.post("/drift", response_model=s.DriftOut)
def check_drift(
    request: Request, workspace: Workspace_, model: ModelPath, body: s.DriftRequest, key: IdempotencyKey = None
):
    """t-test, Kolmogorov-Smirnov and PSI of recent inputs against the active version's reference sample;
    the level (none / warning / critical) and recommendation; a critical check requests a retrain."""

    def write(db):
        service = ModelRegistryService(db, workspace)
        report = service.check_drift(model, body.recent)
        version = service.model(model).active_version
        return s.DriftOut(
            model=model, version=version, retrain_requested=report.level == "critical", **report.as_dict()
        )

    return idempotent_write(request, workspace, key, body, write)


@router.post("/rollback", response_model=s.ModelVersionOut)
def rollback_model(
    request: Request, workspace: Workspace_, model: ModelPath, body: s.RollbackRequest, key: IdempotencyKey = None
):
    """Make a named earlier version active again (recorded as a rollback event)."""

    def write(db):
        v = ModelRegistryService(db, workspace).rollback(model, body.version, body.reason)
        return version_out(v, v.version)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/events", response_model=s.Page[s.ModelEventOut])
def model_events(request: Request, workspace: Workspace_, model: ModelPath, limit: Limit = 50, cursor: Cursor = 0):
    with sessions(request)() as db:
        found = ModelRegistryService(db, workspace).events(model, limit, cursor)
        return page([s.ModelEventOut.model_validate(e) for e in found], [e.id for e in found], limit)
