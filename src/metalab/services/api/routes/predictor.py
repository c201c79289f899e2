"""Performance predictor: completed jobs, and predictions for new ones with conformal intervals."""

from __future__ import annotations

from fastapi import APIRouter, Request

from metalab.services.api import schemas as s
from metalab.services.api.common import ERRORS, V1, IdempotencyKey, Workspace_, idempotent_write
from metalab.services.api.common import sessions_for as sessions
from metalab.services.predictor import Prediction, PredictorService

router = APIRouter(prefix=V1, tags=["performance predictor"], responses=ERRORS)


@router.post("/completed-jobs", status_code=201, response_model=s.CompletedJobOut)
def record_completed_job(
    request: Request, workspace: Workspace_, body: s.CompletedJobCreate, key: IdempotencyKey = None
):
    def write(db):
        return s.CompletedJobOut.model_validate(PredictorService(db, workspace).record(**body.model_dump()))

    return idempotent_write(request, workspace, key, body, write)


@router.post("/predictions", response_model=Prediction)
def predict(request: Request, workspace: Workspace_, body: s.PredictionRequest):
    """Duration, error rate and resources of a new job from its k nearest completed jobs, with split-conformal
    intervals, recommended resources and risk flags (writes nothing)."""
    with sessions(request)() as db:
        return PredictorService(db, workspace).predict(body.features, body.k, body.confidence)
