"""A throw-away PostgreSQL server for tests: started in a temporary folder on a free port, stopped after.

Shared by any test that needs a real server (sweeps' parallel workers; the services store can use it
too): ``from postgres_server import postgres_url`` (a fixture) or :func:`running_postgres`. The server binaries come from
``pg_config --bindir`` (Debian puts them off PATH); ``initdb`` and ``postgres`` refuse to run as root,
so as root they run as the unprivileged ``postgres`` user through ``runuser``. Where the binaries, that
user or ``psycopg`` are missing, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

SERVER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The server cannot run on this machine; the message says why."""


def postgres_bindir() -> tuple[Path | None, str]:
    """(folder with initdb and pg_ctl, why not) — the folder is None when the server cannot run here."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None, "pg_config not found (install PostgreSQL server binaries, e.g. Debian's postgresql-15)"
    bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (bindir / b).is_file()]
    if missing:
        return None, f"PostgreSQL server binaries {', '.join(missing)} not in {bindir}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return None, f"running as root and there is no '{SERVER_USER}' user to run the server as"
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg (v3) is not installed"
    return bindir, ""


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``)."""
    bindir, reason = postgres_bindir()
    if bindir is None:
        raise PostgresUnavailable(reason)
    folder = Path(tempfile.mkdtemp(prefix="metalab-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER)
    port = _free_port()
    run = lambda cmd: subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        done = run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
        if done.returncode:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip().splitlines()[-1:]}")
        options = f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off"
        done = run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
                    "-w", "-t", "60", "start"])
        if done.returncode:
            raise PostgresUnavailable(f"PostgreSQL did not start: {done.stdout.strip().splitlines()[-1:]}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A module-wide PostgreSQL server (skipped with the reason where it cannot run)."""
    try:
        server = running_postgres()
        url = server.__enter__()
    except PostgresUnavailable as reason:
        pytest.skip(str(reason))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)
