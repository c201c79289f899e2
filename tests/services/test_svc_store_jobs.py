"""Store set-up, migrations, jobs and the two commands."""

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from metalab.cli import main
from metalab.errors import ConfigError
from metalab.services.config import ServiceSettings, parse_tokens
from metalab.services.experiments import ExperimentService, ExperimentSpec
from metalab.services.jobs import run_job
from metalab.services.store import Base, create_store_engine, migrate
from metalab.services.store.models import IdempotencyRecord, JobRun, Recommendation, TrustSnapshot, utcnow
from metalab.services.trust import TrustService


def test_migrations_match_the_models_and_rerun_cleanly(store_url):
    engine = create_store_engine(store_url)
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_sqlite_runs_in_wal_mode(sqlite_url):
    engine = create_store_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_jobs_are_idempotent_and_cleanup_respects_retention(sessions):
    with sessions() as session:
        trust = TrustService(session, "alpha")
        for i in range(30):
            rec, _ = trust.record(f"agent{i % 3}", "ops", 0.9, {"action": "restart"})
            trust.evaluate(rec.id, 0.9, success=True)
        old, _ = trust.record("ancient", "ops", 0.5)
        old.created_at = utcnow() - timedelta(days=400)
        session.add(
            IdempotencyRecord(
                workspace="alpha",
                key="old",
                request_hash="x",
                status_code=201,
                response={},
                created_at=utcnow() - timedelta(days=30),
            )
        )
        experiment = ExperimentService(session, "alpha").create(
            ExperimentSpec(name="e", variants=["a", "b"], min_samples_per_variant=5, max_outcomes=10)
        )
        session.commit()
    with sessions() as session:
        for i in range(10):  # reaches max_outcomes but with auto_complete on it is completed at once
            ExperimentService(session, "alpha").record_outcome(experiment.id, "ab"[i % 2], 1)
        session.commit()
    first = run_job("learning-cycle", sessions, ["alpha"])
    second = run_job("learning-cycle", sessions, ["alpha"])
    assert first == second and first["alpha"]["agents"] == 4
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrustSnapshot)) == 4
    cleaned = run_job("cleanup", sessions, ["alpha"])["alpha"]
    again = run_job("cleanup", sessions, ["alpha"])["alpha"]
    assert cleaned["recommendations"] == 1 and cleaned["idempotency_keys"] == 1
    assert again["recommendations"] == 0 and again["idempotency_keys"] == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Recommendation)) == 30
        assert session.scalar(select(func.count()).select_from(JobRun)) == 4
        assert ExperimentService(session, "alpha").get(experiment.id).status == "completed"


def test_commands_report_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METALAB_TOKENS", raising=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["jobs", "nope", "--database-url", url]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown job 'nope'")
    assert main(["serve", "--database-url", url]) == 2
    assert "no workspace tokens" in capsys.readouterr().err
    assert main(["jobs", "trust", "--database-url", "not a url"]) == 2
    assert main(["jobs", "migrate", "--database-url", url]) == 0
    assert main(["jobs", "trust", "--database-url", url]) == 0


def test_settings_from_environment_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_TOKENS", "a:token-aaaaaaaaaaaaaaa,b:token-bbbbbbbbbbbbbbb")
    monkeypatch.setenv("METALAB_DATABASE_URL", "sqlite:///x.db")
    settings = ServiceSettings.load()
    assert settings.workspace_of("token-bbbbbbbbbbbbbbb") == "b" and settings.workspace_of("nope") is None
    assert settings.database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="at least 16"):
        parse_tokens("a:short", "t") and ServiceSettings(tokens={"a": "short"})
    with pytest.raises(ConfigError, match="share one token"):
        ServiceSettings(tokens={"a": "same-token-0123456789", "b": "same-token-0123456789"})
    monkeypatch.delenv("METALAB_TOKENS")
    monkeypatch.delenv("METALAB_DATABASE_URL")
    config = tmp_path / "c.json"
    config.write_text('{"tokens": {"w": "file-token-0123456789"}}')
    assert ServiceSettings.load(config).tokens == {"w": "file-token-0123456789"}
    with pytest.raises(ConfigError, match="does not exist"):
        ServiceSettings.load(tmp_path / "missing.json")
