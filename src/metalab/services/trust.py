"""Recommendation tracking and per-agent trust.

An agent's trust is a weighted mean of four dimensions over its most recent evaluated recommendations
(newer ones weigh more: exponential decay with ``half_life`` evaluations), times a confidence factor
n / (n + k) that grows with the number n of evaluations:

- accuracy: share of recommendations that succeeded;
- consistency: 1 - (standard deviation of overall quality) / 0.5 (0.5 is the largest possible for
  scores in [0, 1]), so an agent whose quality swings is trusted less;
- timeliness: mean of the ``timeliness`` quality score evaluators give (dropped, and the other weights
  renormalised, when no evaluation carries one);
- reliability: 1 - Brier score of the stated confidence against success (calibration; Brier 1950).

Trend: the sign of the least-squares slope of overall quality over the window when its p-value is below
``trend_alpha`` (``scipy.stats.linregress``), else stable. The decision boost multiplies an agent's next
stated confidence by 1 + boost_strength * (trust - threshold), clipped to [1 - s, 1 + s].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.store.models import Evaluation, Recommendation, TrustSnapshot, utcnow

DIMENSIONS = ("accuracy", "consistency", "timeliness", "reliability")


@dataclass(frozen=True)
class TrustConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: {"accuracy": 0.40, "consistency": 0.25, "timeliness": 0.15, "reliability": 0.20}
    )
    window: int = 200  # most recent evaluations used
    half_life: float = 25.0  # evaluations after which an outcome's weight halves
    confidence_k: float = 20.0  # confidence factor n / (n + k)
    threshold: float = 0.6  # trusted above this
    boost_strength: float = 0.5
    trend_alpha: float = 0.05
    trend_min_evaluations: int = 10

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(DIMENSIONS)
        if unknown or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise Unprocessable(
                f"trust weights must be non-negative numbers for {', '.join(DIMENSIONS)} with a positive sum"
            )


@dataclass(frozen=True)
class EvaluatedOutcome:
    """What trust needs from one evaluated recommendation, oldest first in a history."""

    success: bool
    overall_quality: float
    confidence: float
    timeliness: float | None = None


@dataclass
class TrustReport:
    agent: str
    trust: float
    dimensions: dict[str, float | None]
    confidence_factor: float
    trend: Literal["improving", "stable", "declining"]
    evaluations: int
    trusted: bool
    boost: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_trust(agent: str, history: list[EvaluatedOutcome], config: TrustConfig) -> TrustReport:
    """Trust of one agent from its evaluated outcomes (oldest first); only the last ``window`` count."""
    recent = history[-config.window :]
    n = len(recent)
    if n == 0:
        return TrustReport(agent, 0.0, {d: None for d in DIMENSIONS}, 0.0, "stable", 0, False, boost(0.0, config))
    age = np.arange(n - 1, -1, -1, dtype=float)
    weight = 0.5 ** (age / config.half_life)
    success = np.array([o.success for o in recent], dtype=float)
    quality = np.array([o.overall_quality for o in recent], dtype=float)
    confidence = np.array([o.confidence for o in recent], dtype=float)
    mean_quality = np.average(quality, weights=weight)
    dimensions: dict[str, float | None] = {
        "accuracy": float(np.average(success, weights=weight)),
        "consistency": float(1.0 - min(1.0, np.sqrt(np.average((quality - mean_quality) ** 2, weights=weight)) / 0.5)),
        "timeliness": None,
        "reliability": float(1.0 - np.average((confidence - success) ** 2, weights=weight)),
    }
    timely = [(o.timeliness, w) for o, w in zip(recent, weight) if o.timeliness is not None]
    if timely:
        dimensions["timeliness"] = float(np.average([t for t, _ in timely], weights=[w for _, w in timely]))
    used = {d: config.weights.get(d, 0.0) for d, value in dimensions.items() if value is not None}
    base = sum(used[d] * dimensions[d] for d in used) / max(sum(used.values()), 1e-12)
    factor = n / (n + config.confidence_k)
    trust = float(base * factor)
    return TrustReport(
        agent,
        trust,
        dimensions,
        float(factor),
        trend(quality, config),
        n,
        trust > config.threshold,
        boost(trust, config),
    )


def trend(quality: np.ndarray, config: TrustConfig) -> Literal["improving", "stable", "declining"]:
    if len(quality) < config.trend_min_evaluations or np.ptp(quality) == 0:
        return "stable"
    fit = stats.linregress(np.arange(len(quality), dtype=float), quality)
    if fit.pvalue < config.trend_alpha:
        return "improving" if fit.slope > 0 else "declining"
    return "stable"


def boost(trust: float, config: TrustConfig) -> float:
    s = config.boost_strength
    return float(np.clip(1.0 + s * (trust - config.threshold), 1.0 - s, 1.0 + s))


class TrustService:
    """Recommendations, their evaluations and agents' trust, for one workspace on one session."""

    def __init__(self, session: Session, workspace: str, config: TrustConfig | None = None):
        self.session = session
        self.workspace = workspace
        self.config = config or TrustConfig()

    def record(
        self,
        agent: str,
        kind: str,
        confidence: float,
        content: dict[str, Any] | None = None,
        reasoning: str = "",
        evidence: list[Any] | None = None,
        action: str | None = None,
        subject: str | None = None,
    ) -> tuple[Recommendation, TrustReport]:
        """Store a recommendation; the agent's current trust comes back with it (for the decision boost)."""
        content = content or {}
        if action is None and isinstance(content.get("action"), str):
            action = content["action"][:200]
        recommendation = Recommendation(
            workspace=self.workspace,
            agent=agent,
            kind=kind,
            action=action,
            subject=subject,
            content=content,
            confidence=confidence,
            reasoning=reasoning,
            evidence=evidence or [],
        )
        self.session.add(recommendation)
        self.session.flush()
        return recommendation, self.agent_trust(agent)

    def get(self, recommendation_id: int) -> Recommendation:
        found = self.session.scalar(
            select(Recommendation).where(
                Recommendation.id == recommendation_id, Recommendation.workspace == self.workspace
            )
        )
        if found is None:
            raise NotFound(f"recommendation {recommendation_id} not found in workspace {self.workspace!r}")
        return found

    def list(self, limit: int, after_id: int = 0, agent: str | None = None) -> list[Recommendation]:
        query = select(Recommendation).where(Recommendation.workspace == self.workspace, Recommendation.id > after_id)
        if agent is not None:
            query = query.where(Recommendation.agent == agent)
        return list(self.session.scalars(query.order_by(Recommendation.id).limit(limit)))

    def evaluate(
        self,
        recommendation_id: int,
        overall_quality: float,
        scores: dict[str, float] | None = None,
        success: bool | None = None,
        feedback: str = "",
    ) -> Evaluation:
        """Record the outcome of a recommendation (once); success defaults to overall quality >= 0.5."""
        recommendation = self.get(recommendation_id)
        if (
            self.session.scalar(select(Evaluation.id).where(Evaluation.recommendation_id == recommendation.id))
            is not None
        ):
            raise Conflict(f"recommendation {recommendation_id} has already been evaluated")
        evaluation = Evaluation(
            workspace=self.workspace,
            recommendation_id=recommendation.id,
            scores=scores or {},
            overall_quality=overall_quality,
            success=bool(overall_quality >= 0.5 if success is None else success),
            feedback=feedback,
        )
        self.session.add(evaluation)
        self.session.flush()
        return evaluation

    def history(self, agent: str) -> list[EvaluatedOutcome]:
        rows = self.session.execute(
            select(Evaluation.success, Evaluation.overall_quality, Recommendation.confidence, Evaluation.scores)
            .join(Recommendation, Recommendation.id == Evaluation.recommendation_id)
            .where(Recommendation.workspace == self.workspace, Recommendation.agent == agent)
            .order_by(Evaluation.id.desc())
            .limit(self.config.window)
        ).all()
        return [
            EvaluatedOutcome(bool(s), float(q), float(c), _timeliness(scores)) for s, q, c, scores in reversed(rows)
        ]

    def agents(self) -> list[str]:
        return list(
            self.session.scalars(
                select(Recommendation.agent)
                .distinct()
                .where(Recommendation.workspace == self.workspace)
                .order_by(Recommendation.agent)
            )
        )

    def agent_trust(self, agent: str) -> TrustReport:
        return compute_trust(agent, self.history(agent), self.config)

    def all_trust(self) -> list[TrustReport]:
        return sorted((self.agent_trust(a) for a in self.agents()), key=lambda r: -r.trust)

    def trusted(self, threshold: float | None = None) -> list[TrustReport]:
        level = self.config.threshold if threshold is None else threshold
        return [r for r in self.all_trust() if r.trust > level]

    def snapshot(self) -> int:
        """Write every agent's trust to ``trust_snapshots`` (replacing the last one: safe to run twice)."""
        reports = self.all_trust()
        self.session.execute(delete(TrustSnapshot).where(TrustSnapshot.workspace == self.workspace))
        for r in reports:
            self.session.add(
                TrustSnapshot(
                    workspace=self.workspace,
                    agent=r.agent,
                    trust=r.trust,
                    dimensions=r.dimensions,
                    confidence_factor=r.confidence_factor,
                    trend=r.trend,
                    evaluations=r.evaluations,
                    computed_at=utcnow(),
                )
            )
        self.session.flush()
        return len(reports)


def _timeliness(scores: Any) -> float | None:
    value = scores.get("timeliness") if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
