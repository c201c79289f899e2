"""Reads use deferred transactions and never wait behind a writer on SQLite WAL (issue 38).

Write sessions start with ``BEGIN IMMEDIATE`` (writers queue on the lock); read sessions start with a deferred
``BEGIN`` under ``PRAGMA query_only``, so a read during a long write transaction returns at once with the
snapshot from before that write.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from metalab.services.store import create_store_engine, migrate, read_session_factory, session_factory
from metalab.services.store.models import Workspace

HOLD_S = 2.0


@pytest.fixture
def engine(sqlite_url):
    engine = create_store_engine(sqlite_url)
    migrate(engine)
    yield engine
    engine.dispose()


def _long_write(sessions, started: threading.Event) -> None:
    with sessions() as session, session.begin():
        session.add(Workspace(name="written-slowly"))
        session.flush()  # the write lock is held from BEGIN IMMEDIATE; the row is written, not committed
        started.set()
        time.sleep(HOLD_S)


def test_read_during_a_long_write_returns_without_waiting(engine):
    writes, reads = session_factory(engine), read_session_factory(engine)
    started = threading.Event()
    writer = threading.Thread(target=_long_write, args=(writes, started))
    writer.start()
    assert started.wait(10)
    begin = time.perf_counter()
    with reads() as session:
        names = set(session.scalars(select(Workspace.name)))
    waited = time.perf_counter() - begin
    writer.join()
    assert waited < 0.5, f"the read waited {waited:.2f} s behind a {HOLD_S} s write"
    assert "written-slowly" not in names  # the snapshot before the uncommitted write
    with reads() as session:
        assert "written-slowly" in set(session.scalars(select(Workspace.name)))


def test_a_read_session_refuses_to_write_and_leaves_the_connection_writable(engine):
    writes, reads = session_factory(engine), read_session_factory(engine)
    with reads() as session:
        session.add(Workspace(name="sneaky"))
        with pytest.raises(OperationalError, match="readonly"):
            session.flush()
    with writes() as session, session.begin():  # the same pooled connection, query_only switched back off
        session.add(Workspace(name="fine"))
    with reads() as session:
        assert set(session.scalars(select(Workspace.name))) == {"fine"}
