"""Stores for the services tests: a SQLite file per test, and one temporary PostgreSQL server per session.

``store_url`` is parametrised over both backends; the PostgreSQL case is skipped, with the reason,
where the server binaries are missing (see metalab.services.store.postgres_server).
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from svc_helpers import TOKENS

from metalab.services.api.app import create_app
from metalab.services.config import ServiceSettings
from metalab.services.store import create_store_engine, migrate, session_factory
from metalab.services.store.postgres_server import TemporaryPostgres, unavailable_reason


@pytest.fixture(scope="session")
def postgres_server():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    with TemporaryPostgres() as server:
        yield server


def _fresh_postgres_database(server: TemporaryPostgres) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return _fresh_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def sessions(store_url):
    engine = create_store_engine(store_url)
    migrate(engine)
    from metalab.services.store.models import Workspace

    factory = session_factory(engine)
    with factory() as session, session.begin():
        session.add_all([Workspace(name="alpha"), Workspace(name="beta")])
    yield factory
    engine.dispose()


@pytest.fixture
def api(store_url):
    app = create_app(ServiceSettings(database_url=store_url, tokens=dict(TOKENS)))
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def sqlite_sessions(sqlite_url):
    """Like ``sessions`` on SQLite only (for long replays that need not run twice)."""
    engine = create_store_engine(sqlite_url)
    migrate(engine)
    from metalab.services.store.models import Workspace

    factory = session_factory(engine)
    with factory() as session, session.begin():
        session.add_all([Workspace(name="alpha"), Workspace(name="beta")])
    yield factory
    engine.dispose()
