"""Request limits (issue 38): the token and the body size are checked before the body is read.

Two levels: the ASGI app called with a counting ``receive`` (how many body bytes the server pulled), and a
real uvicorn server on a socket sent a 50 MB request whose body is generated as it is sent (so the test
itself never holds 50 MB), timed until the answer.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

import pytest
import uvicorn
from svc_helpers import TOKENS

from metalab.errors import ConfigError
from metalab.services.api.app import create_app
from metalab.services.config import ServiceSettings

FIFTY_MB = 50 * 1024 * 1024
ROUTE = "/v1/workspaces/alpha/experiments"


def _app(sqlite_url: str, limit: int = 64 * 1024):
    return create_app(ServiceSettings(database_url=sqlite_url, tokens=dict(TOKENS), max_body_bytes=limit))


def _call(app, headers: dict[str, str], chunks: int, chunk: bytes = b"x" * 65536) -> tuple[int, int]:
    """(status, body bytes the app pulled) for a POST whose body is ``chunks`` chunks, streamed on demand."""
    pulled, sent = 0, 0
    status = 0

    async def receive():
        nonlocal pulled, sent
        sent += 1
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": ROUTE,
        "raw_path": ROUTE.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("test", 80),
        "client": ("test", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    return status, pulled


def test_no_token_is_refused_before_a_byte_of_the_body(sqlite_url):
    app = _app(sqlite_url)
    status, pulled = _call(app, {"content-length": str(FIFTY_MB), "content-type": "application/json"}, 800)
    assert (status, pulled) == (401, 0)
    status, pulled = _call(app, {"authorization": "Bearer not-a-token-of-anyone", "content-length": "10"}, 1)
    assert (status, pulled) == (401, 0)
    status, pulled = _call(app, {"authorization": f"Bearer {TOKENS['beta']}", "content-length": "10"}, 1)
    assert (status, pulled) == (403, 0)


def test_declared_length_over_the_limit_gets_413_unread(sqlite_url):
    app = _app(sqlite_url)
    status, pulled = _call(app, {"authorization": f"Bearer {TOKENS['alpha']}", "content-length": str(FIFTY_MB)}, 800)
    assert (status, pulled) == (413, 0)


def test_chunked_body_is_cut_at_the_limit(sqlite_url):
    limit, chunk = 64 * 1024, b"x" * 4096
    app = _app(sqlite_url, limit)
    status, pulled = _call(
        app,
        {"authorization": f"Bearer {TOKENS['alpha']}", "content-type": "application/json"},
        FIFTY_MB // len(chunk),
        chunk,
    )
    assert status == 413
    assert limit < pulled <= limit + len(chunk)  # stopped at the first chunk past the limit


def test_body_within_the_limit_still_works(sqlite_url):
    from fastapi.testclient import TestClient

    app = _app(sqlite_url, 4096)
    with TestClient(app) as client:
        ok = client.post(
            ROUTE, json={"name": "e", "variants": ["a", "b"]}, headers={"Authorization": f"Bearer {TOKENS['alpha']}"}
        )
        assert ok.status_code == 201, ok.text
        big = client.post(
            ROUTE,
            json={"name": "e" * 5000, "variants": ["a", "b"]},
            headers={"Authorization": f"Bearer {TOKENS['alpha']}"},
        )
        assert big.status_code == 413 and "4096" in big.json()["detail"]
        assert client.get("/health").status_code == 200


def test_limits_are_in_the_schema(sqlite_url):
    schema = _app(sqlite_url, 12345).openapi()
    post = schema["paths"]["/v1/workspaces/{workspace}/experiments"]["post"]["responses"]
    assert {"401", "403", "413"} <= set(post)
    assert "12345" in post["413"]["description"]
    assert "413" not in schema["paths"]["/health"]["get"]["responses"]


def test_bad_limit_is_one_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="max_body_bytes"):
        ServiceSettings(tokens=dict(TOKENS), max_body_bytes=0)
    monkeypatch.setenv("METALAB_MAX_BODY_BYTES", "ten")
    with pytest.raises(ConfigError, match="METALAB_MAX_BODY_BYTES"):
        ServiceSettings.load(tokens=dict(TOKENS))


@pytest.fixture
def server(sqlite_url):
    """A real uvicorn server (default 1 MiB limit) on a free port, in a thread."""
    app = create_app(ServiceSettings(database_url=sqlite_url, tokens=dict(TOKENS)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    running = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    yield sock.getsockname()
    running.should_exit = True
    thread.join(10)
    app.state.engine.dispose()


def _stream_until_answer(address, head: str, body_bytes: int, chunked: bool) -> tuple[str, float, int]:
    """Send ``head`` then a generated body of ``body_bytes`` in 64 kB pieces, stopping as soon as the server
    answers; (status line, seconds from the first byte sent to the answer, body bytes sent)."""
    piece = b"x" * 65536
    with socket.create_connection(address) as conn:
        conn.settimeout(5)
        start = time.perf_counter()
        conn.sendall(head.encode())
        sent = 0
        while sent < body_bytes and not select.select([conn], [], [], 0)[0]:
            data = (b"%x\r\n" % len(piece)) + piece + b"\r\n" if chunked else piece
            try:
                conn.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        status = conn.recv(256).split(b"\r\n", 1)[0].decode()
        return status, time.perf_counter() - start, sent


def test_50_mb_without_token_refused_within_half_a_second(server):
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {FIFTY_MB}\r\n\r\n"
    )
    status, seconds, sent = _stream_until_answer(server, head, FIFTY_MB, chunked=False)
    assert status.split()[1] in ("401", "413"), status
    assert seconds < 0.5 and sent < FIFTY_MB


def test_50_mb_with_token_gets_413_before_it_is_read(server):
    auth = f"Authorization: Bearer {TOKENS['alpha']}\r\n"
    for chunked in (False, True):
        length = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {FIFTY_MB}\r\n"
        head = f"POST {ROUTE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{auth}{length}\r\n"
        status, seconds, sent = _stream_until_answer(server, head, FIFTY_MB, chunked=chunked)
        assert status.split()[1] == "413", status
        assert seconds < 0.5 and sent < FIFTY_MB // 4, (chunked, seconds, sent)
