"""Periodic work, as commands a scheduler calls (``metalab jobs <name>`` from cron or a Kubernetes CronJob).

Every job is idempotent: it recomputes from the stored records and replaces what it wrote last time
(trust snapshots, patterns), completes only experiments whose analysis is final, and deletes only
records past their retention, so running it twice, or two at once, leaves the same store. Each run is
recorded in ``job_runs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from metalab.services.experiments import ExperimentService
from metalab.services.patterns import PatternService
from metalab.services.store.models import (
    Evaluation,
    Experiment,
    ExperimentOutcome,
    IdempotencyRecord,
    JobRun,
    Recommendation,
    Workspace,
    utcnow,
)
from metalab.services.trust import TrustService


@dataclass(frozen=True)
class RetentionPolicy:
    idempotency_days: float = 7.0  # a retry later than this is a new request
    records_days: float = 365.0  # recommendations, evaluations, outcomes of completed experiments, job runs


def recompute_trust(session: Session, workspace: str, retention: RetentionPolicy) -> dict[str, Any]:
    return {"agents": TrustService(session, workspace).snapshot()}


def refresh_patterns(session: Session, workspace: str, retention: RetentionPolicy) -> dict[str, Any]:
    return {"patterns": len(PatternService(session, workspace).refresh())}


def learning_cycle(session: Session, workspace: str, retention: RetentionPolicy) -> dict[str, Any]:
    """Complete experiments whose analysis is final, then recompute trust and patterns."""
    completed = ExperimentService(session, workspace).auto_complete_running()
    return {
        "experiments_completed": completed,
        **recompute_trust(session, workspace, retention),
        **refresh_patterns(session, workspace, retention),
    }


def retention_cleanup(session: Session, workspace: str, retention: RetentionPolicy) -> dict[str, Any]:
    now = utcnow()
    key_cutoff = now - timedelta(days=retention.idempotency_days)
    record_cutoff = now - timedelta(days=retention.records_days)
    old_recommendations = select(Recommendation.id).where(
        Recommendation.workspace == workspace, Recommendation.created_at < record_cutoff
    )
    completed = select(Experiment.id).where(Experiment.workspace == workspace, Experiment.status == "completed")
    counts = {
        "idempotency_keys": session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.workspace == workspace, IdempotencyRecord.created_at < key_cutoff
            )
        ).rowcount,
        "evaluations": session.execute(
            delete(Evaluation).where(Evaluation.recommendation_id.in_(old_recommendations))
        ).rowcount,
        "recommendations": session.execute(
            delete(Recommendation).where(Recommendation.id.in_(old_recommendations))
        ).rowcount,
        # the variants keep their running sums, so a completed experiment's analysis survives
        "experiment_outcomes": session.execute(
            delete(ExperimentOutcome).where(
                ExperimentOutcome.experiment_id.in_(completed), ExperimentOutcome.created_at < record_cutoff
            )
        ).rowcount,
        "job_runs": session.execute(
            delete(JobRun).where(JobRun.workspace == workspace, JobRun.finished_at < record_cutoff)
        ).rowcount,
    }
    return counts


JOBS: dict[str, Callable[[Session, str, RetentionPolicy], dict[str, Any]]] = {
    "learning-cycle": learning_cycle,
    "trust": recompute_trust,
    "patterns": refresh_patterns,
    "cleanup": retention_cleanup,
}


def run_job(
    name: str,
    sessions: sessionmaker[Session],
    workspaces: list[str] | None = None,
    retention: RetentionPolicy | None = None,
) -> dict[str, dict[str, Any]]:
    """Run job ``name`` for each workspace (all in the store by default), one transaction per workspace."""
    job = JOBS[name]
    retention = retention or RetentionPolicy()
    with sessions() as session:
        names = workspaces or list(session.scalars(select(Workspace.name).order_by(Workspace.name)))
    results = {}
    for workspace in names:
        with sessions() as session, session.begin():
            run = JobRun(name=name, workspace=workspace, started_at=utcnow())
            summary = job(session, workspace, retention)
            run.finished_at, run.summary = utcnow(), summary
            session.add(run)
        results[workspace] = summary
    return results
