"""Tables of the services. Every row belongs to a workspace (a tenant); queries always filter by it.

Experiment variants keep running sums (count, sum, sum of squares) next to the raw outcomes, so an
analysis after every outcome reads a handful of rows instead of scanning all outcomes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """A time-zone-aware UTC timestamp on every backend (issue 38).

    PostgreSQL stores ``timestamp with time zone`` and returns it in the session's zone; SQLite has no
    time-zone type and returns naive values. Both are written as UTC and read back as UTC with an offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be time-zone aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UtcDateTime()}


class Workspace(Base):
    __tablename__ = "workspaces"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The response of a write, kept under its Idempotency-Key so a retry gets it back instead of writing twice."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("workspace", "key", name="uq_idempotency_workspace_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_experiment_workspace_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    outcome_type: Mapped[str] = mapped_column(String(16))  # binary | continuous
    allocation: Mapped[str] = mapped_column(String(16))  # equal | thompson | ucb
    maximize: Mapped[bool] = mapped_column(Boolean, default=True)
    alpha: Mapped[float] = mapped_column(Float)
    mixture_scale: Mapped[float] = mapped_column(Float)
    min_samples_per_variant: Mapped[int] = mapped_column(Integer)
    max_outcomes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto_complete: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | completed
    winner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decision: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Always-valid p-values, the running minimum over every look: {variant: p} against the control, or under
    # adaptive allocation {arm: {other arm: p}} for every pair.
    min_p_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    variants: Mapped[list[Variant]] = relationship(
        order_by="Variant.position", cascade="all, delete-orphan", back_populates="experiment"
    )


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("experiment_id", "name", name="uq_variant_experiment_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0 is the control
    name: Mapped[str] = mapped_column(String(100))
    count: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    total_squares: Mapped[float] = mapped_column(Float, default=0.0)
    experiment: Mapped[Experiment] = relationship(back_populates="variants")


class ExperimentOutcome(Base):
    __tablename__ = "experiment_outcomes"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"))
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Recommendation(Base):
    __tablename__ = "recommendations"
    __table_args__ = (Index("ix_recommendations_workspace_agent", "workspace", "agent"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    agent: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(100))  # the recommendation's type
    action: Mapped[str | None] = mapped_column(String(200), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)  # what decision it is about
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    confidence: Mapped[float] = mapped_column(Float)
    reasoning: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    evaluation: Mapped[Evaluation | None] = relationship(
        back_populates="recommendation", uselist=False, cascade="all, delete-orphan"
    )


class Evaluation(Base):
    """The outcome of one recommendation: quality per dimension, overall quality, success, feedback."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    recommendation_id: Mapped[int] = mapped_column(ForeignKey("recommendations.id", ondelete="CASCADE"), unique=True)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    overall_quality: Mapped[float] = mapped_column(Float)
    success: Mapped[bool] = mapped_column(Boolean)
    feedback: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    recommendation: Mapped[Recommendation] = relationship(back_populates="evaluation")


class TrustSnapshot(Base):
    """The last trust computation per agent, written by the trust job (the API also computes it live)."""

    __tablename__ = "trust_snapshots"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True)
    agent: Mapped[str] = mapped_column(String(200), primary_key=True)
    trust: Mapped[float] = mapped_column(Float)
    dimensions: Mapped[dict[str, Any]] = mapped_column(JSON)
    confidence_factor: Mapped[float] = mapped_column(Float)
    trend: Mapped[str] = mapped_column(String(16))
    evaluations: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pattern(Base):
    __tablename__ = "patterns"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    condition: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    predicts_success: Mapped[bool] = mapped_column(Boolean)
    success_rate: Mapped[float] = mapped_column(Float)
    frequency: Mapped[float] = mapped_column(Float)
    support: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    workspace: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# ---- issue 20: knowledge graph and strategy pool ---------------------------------------------------------
class GraphEdge(Base):
    """A typed relation between two stored things, ``source --relation--> target`` (nodes are ``kind:key``)."""

    __tablename__ = "graph_edges"
    __table_args__ = (
        UniqueConstraint("workspace", "source", "relation", "target", name="uq_graph_edge"),
        Index("ix_graph_edges_workspace_source", "workspace", "source"),
        Index("ix_graph_edges_workspace_target", "workspace", "target"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StrategyProfile(Base):
    """A job profile whose strategies evolve: the gene space, the objectives and the genetic algorithm's state."""

    __tablename__ = "strategy_profiles"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_strategy_profile_workspace_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    genes: Mapped[dict[str, Any]] = mapped_column(JSON)  # SearchSpace.from_config form
    objectives: Mapped[list[Any]] = mapped_column(JSON)  # [{"name": ..., "goal": "max" | "min"}]
    population_size: Mapped[int] = mapped_column(Integer)
    survival_fraction: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    ga_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    default_strategy_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Strategy(Base):
    """One genome of a profile; ``role`` is pending (awaiting outcomes), default, alternative or retired."""

    __tablename__ = "strategies"
    __table_args__ = (UniqueConstraint("profile_id", "candidate_id", name="uq_strategy_profile_candidate"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("strategy_profiles.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[int] = mapped_column(Integer)  # the genetic algorithm's id of this individual
    generation: Mapped[int] = mapped_column(Integer)
    genome: Mapped[list[Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    parents: Mapped[list[Any]] = mapped_column(JSON, default=list)  # strategy ids it evolved from
    role: Mapped[str] = mapped_column(String(16), default="pending")
    objective_means: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcomes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StrategyOutcome(Base):
    __tablename__ = "strategy_outcomes"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"))
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"), index=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- issue 20: performance predictor ---------------------------------------------------------------------
class CompletedJob(Base):
    """A finished job: its profile vector and what it took (the predictor's library)."""

    __tablename__ = "completed_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)  # profile vector: {name: number}
    duration_s: Mapped[float] = mapped_column(Float)
    error_rate: Mapped[float] = mapped_column(Float)
    resources: Mapped[float] = mapped_column(Float)  # e.g. core-hours or GB, one unit per workspace
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- issue 20: transfer insights with differential privacy ----------------------------------------------
class TransferProfile(Base):
    """What a workspace shares for transfer insights: its profile vector, metric values and privacy budget."""

    __tablename__ = "transfer_profiles"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    budget_epsilon: Mapped[float] = mapped_column(Float)
    budget_delta: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrivacyCharge(Base):
    """One release's privacy cost, charged to one contributing workspace (the ledger the budget is summed from)."""

    __tablename__ = "privacy_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- issue 20: model registry with drift and rollback ---------------------------------------------------
class RegisteredModel(Base):
    __tablename__ = "registered_models"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    active_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """One version: its metrics, where its artifact lives, and a reference sample of its input features."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("workspace", "model", "version", name="uq_model_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact: Mapped[str] = mapped_column(String(1000))
    reference: Mapped[dict[str, Any]] = mapped_column(JSON)  # {feature: [values]} the drift checks compare with
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelEvent(Base):
    """What happened to a model: registered, promoted, drift_check, retrain_requested, rollback."""

    __tablename__ = "model_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- issue 20: hyperparameter governor -----------------------------------------------------------------
class Governor(Base):
    """Bounded knobs of one running system, the reward's running average and the last good snapshot."""

    __tablename__ = "governors"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_governor_workspace_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(100))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # metalab.services.governor.GovernorState as a dict
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GovernorEvent(Base):
    __tablename__ = "governor_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    governor_id: Mapped[int] = mapped_column(ForeignKey("governors.id", ondelete="CASCADE"), index=True)
    update_index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # change | refused | accepted | rollback
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DomainPrior(Base):
    """Knob values that worked in a domain (``*`` is the prior combined across domains)."""

    __tablename__ = "domain_priors"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(100), primary_key=True)
    knobs: Mapped[list[Any]] = mapped_column(JSON)  # the knob specs the values belong to (bounds normalise them)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    updates: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- issue 35.3: expert registry and learned consensus ---------------------------------------------------
class Expert(Base):
    """An agent or model with skills (skill -> level 1..5), its weighted-majority weight and its record."""

    __tablename__ = "experts"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_expert_workspace_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # agent | model | human
    skills: Mapped[dict[str, Any]] = mapped_column(JSON)
    weight: Mapped[float] = mapped_column(Float, default=1.0)  # weighted majority (Littlestone & Warmuth 1994)
    vote_weight: Mapped[float] = mapped_column(Float, default=1.0)  # logistic vote weight (online gradient)
    correct: Mapped[int] = mapped_column(Integer, default=0)  # resolved rounds whose outcome its position matched
    resolved: Mapped[int] = mapped_column(Integer, default=0)  # resolved rounds it took a position in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsensusRound(Base):
    """One decision: the proposals and critiques as submitted, the decision and its transcript, the outcome."""

    __tablename__ = "consensus_rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(16))
    beta: Mapped[float] = mapped_column(Float)
    answers: Mapped[int | None] = mapped_column(Integer, nullable=True)  # how many answers the question has
    proposals: Mapped[list[Any]] = mapped_column(JSON)
    critiques: Mapped[list[Any]] = mapped_column(JSON)
    positions: Mapped[dict[str, Any]] = mapped_column(JSON)  # expert -> answer it stood for
    decision: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    transcript: Mapped[list[Any]] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
