"""FastAPI application: routes under ``/v1/workspaces/{workspace}``, a bearer token per workspace.

A request without a token, or with one no workspace has, gets 401; a valid token for another workspace
gets 403; an id from another workspace is simply not found (404), since every query filters by the
workspace. A write may carry an ``Idempotency-Key`` header: the write and the key are committed in one
transaction, and a retry with the same key and body gets the first response back (header
``Idempotent-Replayed: true``) without writing again; the same key with another body gets 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from metalab.services import jobs
from metalab.services.api import schemas as s
from metalab.services.config import ServiceSettings
from metalab.services.errors import Conflict, ServiceError
from metalab.services.experiments import ExperimentService, ExperimentSpec
from metalab.services.patterns import PatternService
from metalab.services.store import create_store_engine, migrate, read_session_factory, session_factory
from metalab.services.store.models import (
    Experiment,
    ExperimentOutcome,
    IdempotencyRecord,
    Recommendation,
    Variant,
    Workspace,
)
from metalab.services.trust import TrustReport, TrustService

bearer = HTTPBearer(auto_error=False, description="the token of the workspace in the path")
ERRORS = {
    400: {"model": s.ErrorOut, "description": "a body that is not JSON, or an unknown job"},
    401: {"model": s.ErrorOut},
    403: {"model": s.ErrorOut},
    404: {"model": s.ErrorOut},
    409: {"model": s.ErrorOut},
    422: {"model": s.ErrorOut},
    503: {"model": s.ErrorOut, "description": "the database is busy or unreachable; retry"},
}

ExperimentId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
RecommendationId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[int, Query(ge=0, le=s.MAX_ID, description="next_cursor of the previous page")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="retries with the same key and body write once",
    ),
]


def _sessions(request: Request) -> sessionmaker[Session]:
    """Read-only sessions (deferred, never wait behind a writer) for GET, write sessions for the other methods."""
    if request.method in ("GET", "HEAD"):
        return request.app.state.read_sessions
    return request.app.state.sessions


async def authorized_workspace(
    request: Request,
    workspace: Annotated[str, Path(description="workspace name")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The workspace in the path, if the bearer token opens it (401 no/unknown token, 403 other workspace)."""
    if credentials is None:
        raise HTTPException(
            401, "missing bearer token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    owner = request.app.state.settings.workspace_of(credentials.credentials)
    if owner is None:
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    if owner != workspace:
        raise HTTPException(403, "this token does not open the workspace in the path")
    return workspace


Workspace_ = Annotated[str, Depends(authorized_workspace)]


def _fingerprint(request: Request, body: BaseModel | None) -> str:
    payload = {
        "method": request.method,
        "path": request.url.path,
        "body": body.model_dump(mode="json") if body is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> JSONResponse:
    if record.request_hash != fingerprint:
        raise Conflict("Idempotency-Key was already used for a different request; use a new key")
    return JSONResponse(record.response, record.status_code, headers={"Idempotent-Replayed": "true"})


def idempotent_write(
    request: Request,
    workspace: str,
    key: str | None,
    body: BaseModel | None,
    write: Callable[[Session], tuple[int, Any]],
) -> JSONResponse:
    """Run ``write`` and store its response under ``key`` in the same transaction (or replay the stored one)."""
    fingerprint = _fingerprint(request, body) if key is not None else ""  # only a keyed write is replayed
    lookup = select(IdempotencyRecord).where(IdempotencyRecord.workspace == workspace, IdempotencyRecord.key == key)
    with _sessions(request)() as session:
        if key is not None and (stored := session.scalar(lookup)) is not None:
            return _replay(stored, fingerprint)
        try:
            status, result = write(session)
            content = jsonable_encoder(result)
            if key is not None:
                session.add(
                    IdempotencyRecord(
                        workspace=workspace, key=key, request_hash=fingerprint, status_code=status, response=content
                    )
                )
            session.commit()
        except IntegrityError:  # the same key committed concurrently (PostgreSQL; SQLite writers queue)
            session.rollback()
            if key is not None and (stored := session.scalar(lookup)) is not None:
                return _replay(stored, fingerprint)
            raise Conflict("the write conflicts with a concurrent one; retry") from None
    return JSONResponse(content, status)


def _experiment_out(e: Experiment) -> s.ExperimentOut:
    variants = [
        s.VariantOut(name=v.name, count=v.count, mean=(v.total / v.count) if v.count else None) for v in e.variants
    ]
    return s.ExperimentOut(
        id=e.id,
        name=e.name,
        status=e.status,
        outcome_type=e.outcome_type,
        allocation=e.allocation,
        maximize=e.maximize,
        alpha=e.alpha,
        mixture_scale=e.mixture_scale,
        min_samples_per_variant=e.min_samples_per_variant,
        max_outcomes=e.max_outcomes,
        auto_complete=e.auto_complete,
        variants=variants,
        winner=e.winner,
        decision=e.decision,
        reason=e.reason,
        created_at=e.created_at,
        completed_at=e.completed_at,
    )


def _recommendation_out(
    r: Recommendation, evaluated: bool, trust: TrustReport | None = None, prediction: Any = None
) -> s.RecommendationOut:
    out = s.RecommendationOut(
        id=r.id,
        agent=r.agent,
        type=r.kind,
        action=r.action,
        subject=r.subject,
        content=r.content,
        confidence=r.confidence,
        reasoning=r.reasoning,
        evidence=r.evidence,
        created_at=r.created_at,
        evaluated=evaluated,
    )
    if trust is not None:
        out.agent_trust, out.boost = trust.trust, trust.boost
        out.boosted_confidence = float(min(1.0, r.confidence * trust.boost))
    if prediction is not None:
        out.prediction = s.PredictionOut(
            predicts_success=prediction.predicts_success,
            pattern=prediction.description,
            confidence=prediction.confidence,
        )
    return out


def _page(items: list, ids: list[int], limit: int) -> dict:
    return {"items": items, "next_cursor": ids[-1] if len(ids) == limit else None}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    def _service_error(_request: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, error.status_code)

    @app.exception_handler(RequestValidationError)
    def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, 422)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """As Starlette's, but a 405 lists every method of the path's most specific route template."""
        headers = dict(error.headers or {})
        if error.status_code == 405:
            matching = [
                r for r in request.app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
            ]
            fewest = min((r.path.count("{") for r in matching), default=0)
            headers["Allow"] = ", ".join(
                sorted({m for r in matching if r.path.count("{") == fewest for m in r.methods})
            )
        return JSONResponse({"detail": error.detail}, error.status_code, headers=headers)

    @app.exception_handler(OperationalError)
    def _database_busy(_request: Request, error: OperationalError) -> JSONResponse:
        return JSONResponse({"detail": "the database is busy or unreachable; retry"}, 503, headers={"Retry-After": "1"})


def create_app(settings: ServiceSettings, run_migrations: bool = True) -> FastAPI:
    """The API over the store at ``settings.database_url``; the configured workspaces are created if missing."""
    engine = create_store_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session, session.begin():
        known = set(session.scalars(select(Workspace.name)))
        session.add_all(Workspace(name=w) for w in settings.tokens if w not in known)
    app = FastAPI(
        title="metalab services",
        version="1",
        description=__doc__.split("\n\n")[0],
        responses={422: {"model": s.ErrorOut}},
    )
    app.state.settings, app.state.sessions, app.state.engine = settings, sessions, engine
    app.state.read_sessions = read_session_factory(engine)
    app.openapi = lambda: s.tighten_openapi(FastAPI.openapi(app))  # type: ignore[method-assign]
    _install_error_handlers(app)

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    v1 = "/v1/workspaces/{workspace}"

    # ---- experiments -------------------------------------------------------------------------------------
    @app.post(
        v1 + "/experiments", status_code=201, response_model=s.ExperimentOut, responses=ERRORS, tags=["experiments"]
    )
    def create_experiment(
        request: Request, workspace: Workspace_, body: s.ExperimentCreate, key: IdempotencyKey = None
    ):
        def write(session):
            spec = ExperimentSpec(**body.model_dump())
            return 201, _experiment_out(ExperimentService(session, workspace).create(spec))

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/experiments", response_model=s.Page[s.ExperimentOut], responses=ERRORS, tags=["experiments"])
    def list_experiments(request: Request, workspace: Workspace_, limit: Limit = 50, cursor: Cursor = 0):
        with _sessions(request)() as session:
            found = ExperimentService(session, workspace).list(limit, cursor)
            return _page([_experiment_out(e) for e in found], [e.id for e in found], limit)

    @app.get(
        v1 + "/experiments/{experiment_id}", response_model=s.ExperimentOut, responses=ERRORS, tags=["experiments"]
    )
    def get_experiment(request: Request, workspace: Workspace_, experiment_id: ExperimentId):
        with _sessions(request)() as session:
            return _experiment_out(ExperimentService(session, workspace).get(experiment_id))

    @app.post(
        v1 + "/experiments/{experiment_id}/assignments",
        response_model=s.AssignmentOut,
        responses=ERRORS,
        tags=["experiments"],
    )
    def assign(request: Request, workspace: Workspace_, experiment_id: ExperimentId):
        """The variant the next unit should get, by the experiment's allocation policy (writes nothing)."""
        with _sessions(request)() as session:
            experiment, variant = ExperimentService(session, workspace).assign(experiment_id, np.random.default_rng())
            return s.AssignmentOut(experiment_id=experiment.id, variant=variant, experiment_status=experiment.status)

    @app.post(
        v1 + "/experiments/{experiment_id}/outcomes",
        status_code=201,
        response_model=s.OutcomeOut,
        responses=ERRORS,
        tags=["experiments"],
    )
    def record_outcome(
        request: Request,
        workspace: Workspace_,
        experiment_id: ExperimentId,
        body: s.OutcomeCreate,
        key: IdempotencyKey = None,
    ):
        def write(session):
            o = ExperimentService(session, workspace).record_outcome(experiment_id, body.variant, body.value, body.unit)
            return 201, s.OutcomeOut(
                id=o.id,
                experiment_id=experiment_id,
                variant=o.variant,
                value=o.value,
                unit=o.unit,
                created_at=o.created_at,
                experiment_status=o.experiment_status,
                winner=o.winner,
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.get(
        v1 + "/experiments/{experiment_id}/outcomes",
        response_model=s.Page[s.OutcomeOut],
        responses=ERRORS,
        tags=["experiments"],
    )
    def list_outcomes(
        request: Request, workspace: Workspace_, experiment_id: ExperimentId, limit: Limit = 50, cursor: Cursor = 0
    ):
        with _sessions(request)() as session:
            experiment = ExperimentService(session, workspace).get(experiment_id)
            rows = session.execute(
                select(ExperimentOutcome, Variant.name)
                .join(Variant, Variant.id == ExperimentOutcome.variant_id)
                .where(ExperimentOutcome.experiment_id == experiment.id, ExperimentOutcome.id > cursor)
                .order_by(ExperimentOutcome.id)
                .limit(limit)
            ).all()
            items = [
                s.OutcomeOut(
                    id=o.id,
                    experiment_id=experiment.id,
                    variant=name,
                    value=o.value,
                    unit=o.unit,
                    created_at=o.created_at,
                    experiment_status=experiment.status,
                    winner=experiment.winner,
                )
                for o, name in rows
            ]
            return _page(items, [o.id for o, _ in rows], limit)

    @app.get(
        v1 + "/experiments/{experiment_id}/analysis",
        response_model=s.AnalysisOut,
        responses=ERRORS,
        tags=["experiments"],
    )
    def analyse(request: Request, workspace: Workspace_, experiment_id: ExperimentId):
        """Per-variant estimates with intervals, probability to be best, always-valid comparisons, the decision and
        why."""
        with _sessions(request)() as session:
            experiment, analysis = ExperimentService(session, workspace).analyse(experiment_id)
            data = analysis.as_dict()
            return s.AnalysisOut(
                experiment_id=experiment.id,
                status=experiment.status,
                outcomes=data["outcomes"],
                estimates=data["estimates"],
                comparisons=data["comparisons"],
                decision=data["decision"],
            )

    @app.post(
        v1 + "/experiments/{experiment_id}/complete",
        response_model=s.ExperimentOut,
        responses=ERRORS,
        tags=["experiments"],
    )
    def complete(
        request: Request,
        workspace: Workspace_,
        experiment_id: ExperimentId,
        body: s.CompleteRequest,
        key: IdempotencyKey = None,
    ):
        def write(session):
            return 200, _experiment_out(
                ExperimentService(session, workspace).complete(experiment_id, body.winner, body.reason)
            )

        return idempotent_write(request, workspace, key, body, write)

    # ---- recommendations and trust ------------------------------------------------------------------------
    @app.post(
        v1 + "/recommendations", status_code=201, response_model=s.RecommendationOut, responses=ERRORS, tags=["trust"]
    )
    def create_recommendation(
        request: Request, workspace: Workspace_, body: s.RecommendationCreate, key: IdempotencyKey = None
    ):
        def write(session):
            recommendation, trust = TrustService(session, workspace).record(
                body.agent,
                body.type,
                body.confidence,
                body.content,
                body.reasoning,
                body.evidence,
                body.action,
                body.subject,
            )
            prediction = PatternService(session, workspace).predict_for(recommendation)
            return 201, _recommendation_out(recommendation, False, trust, prediction)

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/recommendations", response_model=s.Page[s.RecommendationOut], responses=ERRORS, tags=["trust"])
    def list_recommendations(
        request: Request,
        workspace: Workspace_,
        limit: Limit = 50,
        cursor: Cursor = 0,
        agent: Annotated[s.Name | None, Query()] = None,
    ):
        with _sessions(request)() as session:
            found = TrustService(session, workspace).list(limit, cursor, agent)
            return _page(
                [_recommendation_out(r, r.evaluation is not None) for r in found], [r.id for r in found], limit
            )

    @app.get(
        v1 + "/recommendations/{recommendation_id}",
        response_model=s.RecommendationOut,
        responses=ERRORS,
        tags=["trust"],
    )
    def get_recommendation(request: Request, workspace: Workspace_, recommendation_id: RecommendationId):
        with _sessions(request)() as session:
            r = TrustService(session, workspace).get(recommendation_id)
            return _recommendation_out(r, r.evaluation is not None)

    @app.post(
        v1 + "/recommendations/{recommendation_id}/evaluation",
        status_code=201,
        response_model=s.EvaluationOut,
        responses=ERRORS,
        tags=["trust"],
    )
    def evaluate(
        request: Request,
        workspace: Workspace_,
        recommendation_id: RecommendationId,
        body: s.EvaluationCreate,
        key: IdempotencyKey = None,
    ):
        def write(session):
            e = TrustService(session, workspace).evaluate(
                recommendation_id, body.overall_quality, body.scores, body.success, body.feedback
            )
            return 201, s.EvaluationOut(
                id=e.id,
                recommendation_id=e.recommendation_id,
                overall_quality=e.overall_quality,
                scores=e.scores,
                success=e.success,
                feedback=e.feedback,
                created_at=e.created_at,
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/agents", response_model=list[s.TrustOut], responses=ERRORS, tags=["trust"])
    def list_trust(request: Request, workspace: Workspace_, limit: Limit = 100):
        """Every agent's trust, most trusted first (the first ``limit``)."""
        with _sessions(request)() as session:
            return [r.as_dict() for r in TrustService(session, workspace).all_trust()[:limit]]

    @app.get(v1 + "/agents/{agent}/trust", response_model=s.TrustOut, responses=ERRORS, tags=["trust"])
    def agent_trust(request: Request, workspace: Workspace_, agent: Annotated[s.Name, Path()]):
        with _sessions(request)() as session:
            return TrustService(session, workspace).agent_trust(agent).as_dict()

    @app.get(v1 + "/trusted-agents", response_model=list[s.TrustOut], responses=ERRORS, tags=["trust"])
    def trusted_agents(
        request: Request, workspace: Workspace_, threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None
    ):
        with _sessions(request)() as session:
            return [r.as_dict() for r in TrustService(session, workspace).trusted(threshold)]

    @app.get(v1 + "/patterns", response_model=s.PatternsOut, responses=ERRORS, tags=["trust"])
    def patterns(request: Request, workspace: Workspace_):
        """The stored patterns with their accuracy and coverage on the evaluated recommendations."""
        with _sessions(request)() as session:
            service = PatternService(session, workspace)
            quality = service.model_quality()
            return s.PatternsOut(
                patterns=[p.__dict__ for p in service.stored()],
                accuracy=quality["accuracy"],
                coverage=quality["coverage"],
            )

    @app.post(v1 + "/jobs/{job}", response_model=s.JobOut, responses=ERRORS, tags=["jobs"])
    def run_job(
        request: Request,
        workspace: Workspace_,
        job: Annotated[Literal[tuple(jobs.JOBS)], Path(description="the job to run")],  # type: ignore[valid-type]
        key: IdempotencyKey = None,
    ):
        def write(session):
            return 200, s.JobOut(
                job=job, workspace=workspace, summary=jobs.JOBS[job](session, workspace, jobs.RetentionPolicy())
            )

        return idempotent_write(request, workspace, key, None, write)

    from metalab.services.api import learning_routes  # issue 20's services; imports this module's helpers

    learning_routes.install(app, v1)
    from metalab.services.api import expert_routes, limits  # issue 35.3's registry; issue 38's request limits

    app.include_router(expert_routes.router, prefix=v1)
    limits.install_limits(app, settings)
    return app
