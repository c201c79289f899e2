"""FastAPI application: one router per resource under ``/v1/workspaces/{workspace}``, a bearer token per
workspace (the auth, idempotency and paging rules are in :mod:`metalab.services.api.common`).

Adding a route: a service method, its request/response schema in :mod:`schemas`, the route in its resource's
router under ``routes/`` (docs/architecture.md, "A service route").
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from metalab.services.api import limits
from metalab.services.api import schemas as s
from metalab.services.api.routes import (
    experiments,
    experts,
    governor,
    graph,
    predictor,
    registry,
    strategies,
    transfer,
    trust,
)
from metalab.services.config import ServiceSettings
from metalab.services.errors import ServiceError
from metalab.services.looks import LookWorker
from metalab.services.store import create_store_engine, migrate, read_session_factory, session_factory
from metalab.services.store.models import Workspace

ROUTERS = (experiments, trust, governor, registry, transfer, strategies, graph, predictor, experts)


def _service_error(_request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, error.status_code)


def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    parts = [
        f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', 'invalid')}" for item in error.errors()
    ]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, 422)


def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """As Starlette's, but a 405 lists every method of the path's most specific route template."""
    headers = dict(error.headers or {})
    if error.status_code == 405:
        matching = [r for r in request.app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)]
        fewest = min((r.path.count("{") for r in matching), default=0)
        headers["Allow"] = ", ".join(sorted({m for r in matching if r.path.count("{") == fewest for m in r.methods}))
    return JSONResponse({"detail": error.detail}, error.status_code, headers=headers)


def _database_busy(_request: Request, _error: OperationalError) -> JSONResponse:
    return JSONResponse({"detail": "the database is busy or unreachable; retry"}, 503, headers={"Retry-After": "1"})


def health() -> dict[str, str]:
    """Liveness: the process answers (no database access)."""
    return {"status": "ok"}


def create_app(settings: ServiceSettings, run_migrations: bool = True) -> FastAPI:
    """The API over the store at ``settings.database_url``; the configured workspaces are created if missing."""
    engine = create_store_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session, session.begin():
        known = set(session.scalars(select(Workspace.name)))
        session.add_all(Workspace(name=w) for w in settings.tokens if w not in known)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # the look worker takes the appended outcomes' looks (services.looks)
        worker = LookWorker(sessions).start()
        yield
        worker.stop()

    app = FastAPI(lifespan=lifespan, title="metalab services", version="1", description=__doc__.split("\n\n")[0])
    app.state.settings, app.state.sessions, app.state.engine = settings, sessions, engine
    app.state.read_sessions = read_session_factory(engine)
    app.openapi = lambda: s.tighten_openapi(FastAPI.openapi(app))  # type: ignore[method-assign]
    handlers = {
        ServiceError: _service_error,
        RequestValidationError: _validation_error,
        StarletteHTTPException: _http_error,
        OperationalError: _database_busy,
    }
    for error, handler in handlers.items():
        app.add_exception_handler(error, handler)  # type: ignore[arg-type]
    app.add_api_route("/health", health, methods=["GET"], tags=["meta"])
    for module in ROUTERS:  # the routers' own APIRoutes, as they are (include_router would wrap each router)
        app.router.routes.extend(module.router.routes)
    limits.install_limits(app, settings)
    return app
