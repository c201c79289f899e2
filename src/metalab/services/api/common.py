"""What every router of the API shares: the workspace auth, paging and id parameters, read sessions and the
idempotent write. Routers import this module and :mod:`schemas`; ``app.py`` imports the routers (no cycle).

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
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metalab.services.api import schemas as s
from metalab.services.errors import Conflict
from metalab.services.store.models import IdempotencyRecord

V1 = "/v1/workspaces/{workspace}"  # every router's prefix
bearer = HTTPBearer(auto_error=False, description="the token of the workspace in the path")


def _error(description: str) -> dict[str, Any]:
    return {"model": s.ErrorOut, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("a body that is not JSON, or a malformed Content-Length"),
    401: _error("no or unknown bearer token"),
    403: _error("the token opens another workspace"),
    404: _error("an id or name not found in this workspace"),
    409: _error("the request conflicts with the stored state (a duplicate name, a finished resource, a reused key)"),
    422: _error("the request breaks a rule of its schema; the detail names the field and the rule"),
    503: _error("the database is busy or unreachable; retry"),
}


def cross_field(rule: str) -> dict[str, Any]:
    """OpenAPI extras of an operation whose body has a rule between fields that JSON Schema cannot state:
    the 422 says it, and ``x-cross-field-rule`` marks it for experiments/services/schema_conformance.py."""
    return {"x-cross-field-rule": rule}


Id = Annotated[int, Path(ge=1, le=s.MAX_ID)]
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


def sessions_for(request: Request):
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


def read(request: Request, workspace: str, service: type, method: str, *args: Any) -> Any:
    """Call ``service(session, workspace).method(*args)`` on a read session (the answer is shaped inside)."""
    with sessions_for(request)() as session:
        return getattr(service(session, workspace), method)(*args)


def _fingerprint(request: Request, body: Any) -> str:
    dumped = body.model_dump(mode="json") if isinstance(body, BaseModel) else jsonable_encoder(body)
    payload = {"method": request.method, "path": request.url.path, "body": dumped}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> JSONResponse:
    if record.request_hash != fingerprint:
        raise Conflict("Idempotency-Key was already used for a different request; use a new key")
    return JSONResponse(record.response, record.status_code, headers={"Idempotent-Replayed": "true"})


_KEY_LOOKUP = select(IdempotencyRecord).where(  # built once: building it per write cost more than running it
    IdempotencyRecord.workspace == bindparam("workspace"), IdempotencyRecord.key == bindparam("key")
)


def idempotent_write(
    request: Request, workspace: str, key: str | None, body: Any, write: Callable[[Session], Any]
) -> JSONResponse:
    """Run ``write`` and store its response under ``key`` in the same transaction (or replay the stored one).

    The status is the route's own ``status_code`` (201 for a creation, else 200).
    """
    status = getattr(request.scope.get("route"), "status_code", None) or 200
    fingerprint = _fingerprint(request, body) if key is not None else ""  # only a keyed write is replayed
    lookup = _KEY_LOOKUP.params(workspace=workspace, key=key)
    with sessions_for(request)() as session:
        if key is not None and (stored := session.scalar(lookup)) is not None:
            return _replay(stored, fingerprint)
        try:
            content = jsonable_encoder(write(session))
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


def page(items: list, ids: list[int], limit: int) -> dict:
    return {"items": items, "next_cursor": ids[-1] if len(ids) == limit else None}
