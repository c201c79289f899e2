"""``metalab serve`` (the HTTP API under uvicorn) and ``metalab jobs <name>`` (periodic work for cron).

Both read the store URL and the tokens from ``--config FILE`` (JSON), ``METALAB_DATABASE_URL`` /
``METALAB_TOKENS`` or the default SQLite file (see :mod:`metalab.services.config`).
"""

from __future__ import annotations

import argparse
import json

from metalab.errors import ConfigError


JOB_NAMES = {"migrate": "upgrade the store's schema",
             "learning-cycle": "complete finished experiments, then recompute trust and patterns",
             "trust": "recompute every agent's trust", "patterns": "refresh the discovered patterns",
             "cleanup": "drop idempotency keys and records older than their retention"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the services' HTTP API (FastAPI under uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    _store_arguments(serve)
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=_serve)

    # the job names are checked when the job runs, so that `metalab env` does not import SQLAlchemy and scipy
    # (a test holds JOB_NAMES to metalab.services.jobs.JOBS)
    jobs = subparsers.add_parser("jobs", help=f"run one periodic job of the services, for cron ({', '.join(JOB_NAMES)})",
                                 description="Run one periodic job of the services on every workspace of the store "
                                             "(or --workspace ones), for cron. Jobs: " + "; ".join(
                                                 f"{name}: {what}" for name, what in JOB_NAMES.items()))
    jobs.add_argument("name", metavar="name", help="one of: " + ", ".join(JOB_NAMES))
    jobs.add_argument("--workspace", action="append", help="only this workspace (repeatable); default: all in the store")
    jobs.add_argument("--idempotency-days", type=float, default=7.0, help="cleanup: keep idempotency keys this long")
    jobs.add_argument("--retention-days", type=float, default=365.0, help="cleanup: keep records this long")
    _store_arguments(jobs)
    jobs.set_defaults(func=_jobs)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file with database_url and tokens {workspace: token}")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: sqlite file logs/services/metalab.db)")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from metalab.services.api.app import create_app
    from metalab.services.config import ServiceSettings

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port={args.port} is not allowed: --port must be in 1..65535")
    settings = ServiceSettings.load(args.config, args.database_url)
    if not settings.tokens:
        raise ConfigError("no workspace tokens: set METALAB_TOKENS=workspace:token,... or 'tokens' in --config")
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
    results = run_job(args.name, session_factory(engine), args.workspace,
                      RetentionPolicy(args.idempotency_days, args.retention_days))
    print(json.dumps({"job": args.name, "workspaces": results}, default=str))
    return 0
