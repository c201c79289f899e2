"""Where a study lives: one process, several processes on one machine, or a cluster.

- ``sqlite:///path.db``: the default for one process (an SQLite file allows one writer at a time).
- ``journal:path.log``: Optuna's :class:`~optuna.storages.JournalStorage` over an append-only file with
  a file lock, safe for several worker processes on one machine (Optuna's advice for that case).
- any other SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host:5432/db``: a server every node reaches.
- a config node with ``_target_`` (e.g. ``optuna.storages.JournalStorage``) is instantiated as is.

SQL storages get Optuna's heartbeat in :func:`open_storage` when asked (``heartbeat_seconds``): a worker
that dies mid-trial (SIGKILL, node lost) stops beating, and the next worker marks its trial failed and
re-queues its parameters (:class:`~optuna.storages.RetryFailedTrialCallback`). The journal storage has no
heartbeat in Optuna 5; :mod:`.runner` reaps its dead workers' trials by process id instead.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import hydra
import optuna
from omegaconf import DictConfig, OmegaConf

from metalab.errors import ConfigError

JOURNAL_PREFIX = "journal:"
SCHEMA_RACE_RETRIES = 5


def open_storage(spec: Any, heartbeat_seconds: int | None = None) -> optuna.storages.BaseStorage | None:
    """An Optuna storage from a URL, a ``journal:`` path or a ``_target_`` node; ``None`` stays in memory.

    Raises :class:`ConfigError` with the reason when the storage cannot be opened or reached, before any
    trial is created (so a wrong URL leaves no trial hanging).
    """
    if spec is None or spec == "":
        return None
    if isinstance(spec, (dict, DictConfig)):
        node = OmegaConf.create(spec) if isinstance(spec, dict) else spec
        try:
            return hydra.utils.instantiate(node)
        except Exception as error:  # noqa: BLE001 - any failure to build the storage is the user's input
            raise ConfigError(f"storage {OmegaConf.to_container(node)}: cannot be created ({_reason(error)})") from None
    if not isinstance(spec, str):
        return spec  # an already built storage object
    if spec.startswith(JOURNAL_PREFIX):
        return journal_storage(spec.removeprefix(JOURNAL_PREFIX))
    if "://" not in spec:
        raise ConfigError(
            f"storage={spec!r} is not allowed: give an SQLAlchemy URL (sqlite:///sweeps.db, "
            "postgresql+psycopg://user@host:5432/db) or journal:<file> for several local workers"
        )
    return rdb_storage(spec, heartbeat_seconds)


def journal_storage(path: str) -> optuna.storages.JournalStorage:
    """Journal file storage with Optuna's ``open``-based lock (works on NFS too)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    file = Path(path).expanduser()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(file), lock_obj=JournalFileOpenLock(str(file))))
    except OSError as error:
        raise ConfigError(f"storage=journal:{path}: cannot open the journal file ({_reason(error)})") from None


def rdb_storage(url: str, heartbeat_seconds: int | None = None) -> optuna.storages.RDBStorage:
    """An SQL storage; the connection is made here, so an unreachable server fails now, once."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    heartbeat = {}
    if heartbeat_seconds:
        heartbeat = dict(
            heartbeat_interval=heartbeat_seconds,
            grace_period=3 * heartbeat_seconds,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
        )
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many types for a bad URL or server
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(error):
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            raise ConfigError(
                f"storage={redact_password(url)!r} cannot be reached ({_reason(error)}); check the URL, "
                "that the server runs and accepts this user"
            ) from None
    raise AssertionError("unreachable")


def _schema_race(error: BaseException) -> bool:
    """Whether opening failed because another worker was creating Optuna's tables at the same moment.

    Workers started together on an empty database all run ``CREATE TABLE`` (PostgreSQL then refuses the
    losers with a duplicate key in its catalogue, or "already exists"); once one has won, opening again
    finds the tables and goes through."""
    text = str(getattr(error, "orig", None) or error)
    return "duplicate key value violates unique constraint" in text or "already exists" in text


def describe(storage: Any) -> str:
    """A printable name for a storage, without passwords."""
    if storage is None:
        return "in memory"
    if isinstance(storage, optuna.storages.RDBStorage):
        return redact_password(storage.url)
    return type(storage).__name__


def redact_password(url: str) -> str:
    """``postgresql://user:secret@host`` -> ``postgresql://user:***@host``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"


def _reason(error: BaseException) -> str:
    """The last informative line of a driver error (SQLAlchemy adds a URL to its background page)."""
    lines = [line.strip() for line in str(getattr(error, "orig", None) or error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("(Background on this error", "[SQL:"))]
    return lines[0] if lines else type(error).__name__
