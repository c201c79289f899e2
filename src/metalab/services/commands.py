"""``metalab serve`` (the HTTP API under uvicorn) and ``metalab jobs <name>`` (periodic work for cron).

Both read the store URL and the tokens from ``--config FILE`` (JSON), ``METALAB_DATABASE_URL`` /
``METALAB_TOKENS`` or the default SQLite file (see :mod:`metalab.services.config`).
"""

from __future__ import annotations

import argparse
import json
import socket

from metalab.errors import ConfigError

SERVE_EPILOG = """\
configuration (the first that sets a value wins):
  tokens         METALAB_TOKENS=workspace:token,workspace:token (a token of >= 16 characters per
                 workspace; a request to /v1/workspaces/<workspace>/... sends 'Authorization: Bearer <token>'),
                 else "tokens" in the --config file; at least one workspace is required
  database       --database-url, METALAB_DATABASE_URL, "database_url" in the --config file, else the
                 SQLite file logs/services/metalab.db under $METALAB_ROOT (default .)
  body limit     --max-body-bytes, METALAB_MAX_BODY_BYTES, "max_body_bytes" in the --config file, else 1 MiB;
                 larger bodies get 413 before they are read, requests without a valid token 401
  --config FILE  JSON: {"database_url": "postgresql+psycopg://user:pw@host:5432/db",
                        "tokens": {"team": "a-long-secret-token-123"}, "max_body_bytes": 1048576}

Start-up checks the dialect, the driver, that the database answers within --connect-timeout, the tokens
and that the address is free; a failed check prints one 'error:' line and exits with status 2.
The OpenAPI schema is served at /openapi.json, the interactive docs at /docs.

example:
  METALAB_TOKENS=team:a-long-secret-token-123 metalab serve --port 8000
"""

JOB_NAMES = {
    "migrate": "upgrade the store's schema",
    "learning-cycle": "complete finished experiments, then recompute trust and patterns",
    "trust": "recompute every agent's trust",
    "patterns": "refresh the discovered patterns",
    "cleanup": "drop idempotency keys and records older than their retention",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the services' HTTP API (FastAPI under uvicorn)",
        description="Run the services' HTTP API (FastAPI under uvicorn).",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for all)",
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port, 1..65535 (default: %(default)s)")
    _store_arguments(serve)
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="largest request body accepted (default: METALAB_MAX_BODY_BYTES or 1048576)",
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the database at start-up (default: %(default)s)",
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    serve.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: %(default)s; info logs every request)",
    )
    serve.set_defaults(func=_serve)

    # the job names are checked when the job runs, so that `metalab env` does not import SQLAlchemy and scipy
    # (a test holds JOB_NAMES to metalab.services.jobs.JOBS)
    jobs = subparsers.add_parser(
        "jobs",
        help=f"run one periodic job of the services, for cron ({', '.join(JOB_NAMES)})",
        description="Run one periodic job of the services on every workspace of the store "
        "(or --workspace ones), for cron. Jobs: " + "; ".join(f"{name}: {what}" for name, what in JOB_NAMES.items()),
    )
    jobs.add_argument("name", metavar="name", help="one of: " + ", ".join(JOB_NAMES))
    jobs.add_argument(
        "--workspace", action="append", help="only this workspace (repeatable); default: all in the store"
    )
    jobs.add_argument("--idempotency-days", type=float, default=7.0, help="cleanup: keep idempotency keys this long")
    jobs.add_argument("--retention-days", type=float, default=365.0, help="cleanup: keep records this long")
    _store_arguments(jobs)
    jobs.set_defaults(func=_jobs)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file with database_url and tokens {workspace: token}")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: sqlite file logs/services/metalab.db)")


def check_listen_address(host: str, port: int) -> None:
    """One ConfigError line if ``port`` is out of range, ``host`` does not resolve or the address is taken."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port={port} is not allowed: --port must be in 1..65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise ConfigError(f"--host={host!r} is not an address of this machine ({error.strerror})") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"--host={host!r} --port={port}: cannot listen there ({error.strerror})") from None


def validate_serve(args: argparse.Namespace):
    """The settings, once every start-up input is checked (before the API's heavy imports)."""
    from metalab.services.config import ServiceSettings
    from metalab.services.store.database import check_database

    if not 0 < args.connect_timeout <= 300:
        raise ConfigError(f"--connect-timeout={args.connect_timeout} is not allowed: it must be in (0, 300] seconds")
    settings = ServiceSettings.load(args.config, args.database_url, max_body_bytes=args.max_body_bytes)
    if not settings.tokens:
        raise ConfigError("no workspace tokens: set METALAB_TOKENS=workspace:token,... or 'tokens' in --config")
    check_listen_address(args.host, args.port)
    check_database(settings.database_url, args.connect_timeout)
    return settings


def _serve(args: argparse.Namespace) -> int:
    settings = validate_serve(args)
    import uvicorn

    from metalab.services.api.app import create_app

    app = create_app(settings, run_migrations=not args.no_migrate)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from metalab.services.config import ServiceSettings
    from metalab.services.jobs import JOBS, RetentionPolicy, run_job
    from metalab.services.store import create_store_engine, migrate, session_factory

    if args.name != "migrate" and args.name not in JOBS:
        raise ConfigError(f"unknown job {args.name!r}; the jobs are: migrate, " + ", ".join(JOBS))
    if args.idempotency_days < 0 or args.retention_days < 0:
        raise ConfigError("--idempotency-days and --retention-days must be >= 0")
    settings = ServiceSettings.load(args.config, args.database_url)
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    if args.name == "migrate":
        print(json.dumps({"job": "migrate", "database": engine.url.render_as_string(hide_password=True)}))
        return 0
    results = run_job(
        args.name, session_factory(engine), args.workspace, RetentionPolicy(args.idempotency_days, args.retention_days)
    )
    print(json.dumps({"job": args.name, "workspaces": results}, default=str))
    return 0
