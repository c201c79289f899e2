"""A throw-away PostgreSQL server in a temporary directory, for tests and the reliability scripts.

Uses the server binaries of the machine (``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``).
``initdb`` and ``postgres`` refuse to run as root, so as root they run as the ``postgres`` user
(``runuser``) on a data directory that user owns. The server listens on 127.0.0.1 at a free port with
trust authentication, and is stopped (fast shutdown) and deleted on exit.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bindir() -> Path | None:
    """Where initdb and postgres are, or None when this machine has no PostgreSQL server binaries."""
    candidates = []
    if shutil.which("pg_config"):
        try:
            candidates.append(
                subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
            )
        except subprocess.CalledProcessError:
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "postgres").is_file():
            return Path(directory)
    return None


def unavailable_reason() -> str | None:
    """Why a temporary server cannot be started here (None when it can)."""
    if find_bindir() is None:
        return (
            "no PostgreSQL server binaries (initdb, postgres) found via pg_config --bindir or /usr/lib/postgresql/*/bin"
        )
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: initdb/postgres refuse root"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryPostgres:
    """``with TemporaryPostgres() as pg: pg.url`` -> a SQLAlchemy URL of an empty database ``metalab``."""

    def __init__(self, database: str = "metalab"):
        self.database = database
        self.bindir = find_bindir()
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.root: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> TemporaryPostgres:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="metalab-pg-"))
        data, sockets = self.root / "data", self.root / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            for path in (self.root, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        subprocess.run(
            self._as_server_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.process = subprocess.Popen(
            self._as_server_user(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=200",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "wb"),
        )
        self._wait_and_create_database()
        return self

    def _wait_and_create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                    log = (self.root / "server.log").read_text(errors="replace") if self.root else ""
                    self.stop()
                    raise RuntimeError(f"temporary PostgreSQL did not start: {log[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown; runuser passes it on
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
