"""Engines and migrations for the store.

SQLite (the default) is opened in WAL mode so readers never block the writer, with a busy timeout so
concurrent writers wait instead of failing. A session of :func:`session_factory` may write, and its
transactions start with ``BEGIN IMMEDIATE``: in WAL mode a read transaction that later tries to write
fails at once with SQLITE_BUSY if another writer committed meanwhile, whereas taking the write lock up
front makes writers queue on the timeout. A session of :func:`read_session_factory` only reads: its
transactions start with a deferred ``BEGIN`` (a WAL snapshot, no lock, so it never waits behind a
writer) under ``PRAGMA query_only``, so a write slipped into a read path fails loudly instead of
upgrading the lock. ``synchronous=NORMAL`` keeps committed transactions across a killed process (not
across a power cut). Any other SQLAlchemy URL (``postgresql+psycopg://...``) is used as is (its plain reads
never wait behind writers under MVCC; a read path that locks rows with ``FOR UPDATE`` still may).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from metalab.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "metalab_read_only"  # execution option of the engine behind read_session_factory


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # query_only is a connection flag, not transactional: set it at every begin, since a pooled
        # connection serves read and write sessions in turn
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("PRAGMA query_only=ON")
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("PRAGMA query_only=OFF")
            connection.exec_driver_sql("BEGIN IMMEDIATE")


URL_EXAMPLES = "sqlite:///logs/services/metalab.db or postgresql+psycopg://user:password@host:5432/db"


def parse_database_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError(f"database_url={url!r} is not a SQLAlchemy URL (e.g. {URL_EXAMPLES})") from None


def create_store_engine(url: str, **kwargs) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created, SQLite gets WAL mode and write queuing."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(parsed, **kwargs)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_database(url: str, timeout_s: float = 5.0) -> None:
    """Raise one ConfigError line if ``url`` names an unknown dialect, a driver that is not installed, or a
    database that does not answer within ``timeout_s`` (checked at start-up instead of on the first request)."""
    parsed = parse_database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"database_url={shown!r}: unknown dialect {parsed.drivername!r}; use e.g. {URL_EXAMPLES}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise ConfigError(
            f"database_url={shown!r}: the driver of {parsed.drivername!r} is not installed "
            f"({error.name or error}); install it or use e.g. {URL_EXAMPLES}"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_store_engine(url)
    else:
        timed = parsed.get_backend_name() in ("postgresql", "mysql")  # their drivers take connect_timeout
        args = {"connect_timeout": max(1, round(timeout_s))} if timed else {}
        engine = create_engine(parsed, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except (DBAPIError, OSError) as error:
        raise ConfigError(
            f"database_url={shown!r} is unreachable (waited at most {timeout_s:g} s): {_first_line(error)}"
        ) from None
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that may write (on SQLite each transaction takes the write lock at its start)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read: deferred transactions that never wait behind a writer (same pool as ``engine``)."""
    return sessionmaker(
        bind=engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False, autoflush=False
    )


def alembic_config(engine: Engine) -> Config:
    """Alembic's config pointing at the migrations shipped inside the package (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent: an up-to-date store is left as it is)."""
    command.upgrade(alembic_config(engine), revision)
