"""Request limits enforced before a body is read: the bearer token from the headers, then the body size.

A plain ASGI middleware, outside FastAPI's routing, so the checks run on the request line and headers
alone: a request to ``/v1/workspaces/{workspace}/...`` without a token, or with one no workspace has,
gets 401 at once and one with another workspace's token 403, before a byte of the body is received;
a ``Content-Length`` over ``max_body_bytes`` gets 413 at once; a chunked body (no length) is counted
as it streams and refused with 413 as soon as it passes the limit, so no request makes the server
read or parse more than ``max_body_bytes``. The route's own dependency checks the token again, so
the routes stay correct without this middleware; the middleware only makes refusals cheap.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException

from metalab.services.config import ServiceSettings

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WORKSPACE_PREFIX = "/v1/workspaces/"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; an HTTPException, so FastAPI's body
    parsing re-raises it unchanged (it wraps any other exception into a 400) and the handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (the server's max_body_bytes)")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def token_refusal(settings: ServiceSettings, path: str, authorization: str | None) -> tuple[int, str] | None:
    """(status, message) if the headers alone refuse a workspace route, else None (same rules as the routes)."""
    if not path.startswith(WORKSPACE_PREFIX):
        return None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return 401, "missing bearer token: send 'Authorization: Bearer <token>'"
    owner = settings.workspace_of(token.strip())
    if owner is None:
        return 401, "invalid bearer token"
    if path[len(WORKSPACE_PREFIX) :].split("/", 1)[0] != owner:
        return 403, "this token does not open the workspace in the path"
    return None


def length_refusal(content_length: str | None, limit: int) -> tuple[int, str] | None:
    """(status, message) if the declared ``Content-Length`` is malformed or over ``limit``, else None."""
    if content_length is None:
        return None
    if not content_length.strip().isdigit():
        return 400, f"Content-Length {content_length!r} is not a non-negative integer"
    if int(content_length) > limit:
        return 413, f"request body of {int(content_length)} bytes is larger than {limit} bytes (max_body_bytes)"
    return None


async def _answer(send: Send, status: int, message: str) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    body = json.dumps({"detail": message}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: token and body-size checks on the headers, then a byte count on the streamed body."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        refusal = token_refusal(self.settings, scope["path"], _header(scope, b"authorization")) or length_refusal(
            _header(scope, b"content-length"), limit
        )
        if refusal is not None:
            await _answer(send, *refusal)
            return
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as error:  # raised outside FastAPI's handlers (e.g. a route reading the stream itself)
            if started:
                raise
            await _answer(send, error.status_code, str(error.detail))


def document_limits(app: FastAPI, settings: ServiceSettings) -> None:
    """Add the 413 (every operation with a body) and 401/403 (every workspace route) to the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        error = {"$ref": "#/components/schemas/ErrorOut"}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation or path.startswith(WORKSPACE_PREFIX):
                    responses.setdefault(
                        "413",
                        {
                            "description": f"body over {settings.max_body_bytes} bytes "
                            "(max_body_bytes), refused before it is read",
                            "content": {"application/json": {"schema": error}},
                        },
                    )
                    responses.setdefault(
                        "400",
                        {"description": "malformed Content-Length", "content": {"application/json": {"schema": error}}},
                    )
                if path.startswith(WORKSPACE_PREFIX):
                    for status, text in (
                        ("401", "no or unknown bearer token (checked before the body is read)"),
                        ("403", "the token opens another workspace"),
                    ):
                        responses.setdefault(
                            status, {"description": text, "content": {"application/json": {"schema": error}}}
                        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_limits(app: FastAPI, settings: ServiceSettings) -> None:
    """The middleware and its documentation in the schema; ``settings.max_body_bytes`` is the limit."""
    app.add_middleware(RequestLimits, settings=settings)
    document_limits(app, settings)
