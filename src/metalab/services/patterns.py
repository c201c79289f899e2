"""Pattern discovery over evaluated recommendations, and predictions from the patterns found.

Five kinds of pattern, each a condition on a recommendation with the success rate of the recommendations
that meet it, its frequency (share of all evaluated recommendations) and its confidence: the lower end
of the 95% Wilson score interval (``scipy.stats.binomtest(...).proportion_ci``) of the rate of the
outcome it predicts, so a pattern seen on few recommendations is not trusted.

- high_confidence: stated confidence >= ``high_confidence``;
- consensus: at least ``consensus_agents`` distinct agents recommended the same action on the same subject;
- expert_opinion: one pattern per agent whose approval rate (success rate) is >= ``expert_approval``;
- success_indicator / failure_avoidance: a (type, action) pair whose success rate is
  >= ``indicator_rate`` / <= ``avoidance_rate``.

A pattern is kept when it has ``min_support`` recommendations and its confidence is >= ``min_confidence``.
A new recommendation is predicted by the most confident pattern it meets (none: not covered).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scipy import stats
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metalab.services.store.models import Evaluation, Pattern, Recommendation, utcnow


@dataclass(frozen=True)
class PatternConfig:
    high_confidence: float = 0.8
    consensus_agents: int = 3
    expert_approval: float = 0.7
    indicator_rate: float = 0.7
    avoidance_rate: float = 0.3
    min_support: int = 20
    min_confidence: float = 0.7  # the predicted direction holds >= 70% at the 95% lower bound


@dataclass(frozen=True)
class RecordView:
    """The parts of a recommendation patterns look at; ``agreeing_agents`` counts distinct agents with the same
    (subject, action)."""

    agent: str
    kind: str
    action: str | None
    confidence: float
    agreeing_agents: int
    success: bool | None = None


@dataclass(frozen=True)
class FoundPattern:
    kind: str
    condition: dict[str, Any]
    description: str
    predicts_success: bool
    success_rate: float
    frequency: float
    support: int
    confidence: float

    def matches(self, record: RecordView) -> bool:
        c = self.condition
        if self.kind == "high_confidence":
            return record.confidence >= c["min_confidence"]
        if self.kind == "consensus":
            return record.agreeing_agents >= c["min_agents"]
        if self.kind == "expert_opinion":
            return record.agent == c["agent"]
        return record.kind == c["type"] and record.action == c["action"]


def agreeing_agents(records: Iterable[tuple[str, str | None, str | None]]) -> dict[tuple[str, str], int]:
    """(subject, action) -> number of distinct agents that recommended it, from (agent, subject, action) rows."""
    agents: dict[tuple[str, str], set[str]] = defaultdict(set)
    for agent, subject, action in records:
        if subject is not None and action is not None:
            agents[(subject, action)].add(agent)
    return {key: len(value) for key, value in agents.items()}


def _wilson_low(successes: int, n: int) -> float:
    return float(stats.binomtest(successes, n).proportion_ci(0.95, method="wilson").low)


def _pattern(
    kind: str,
    condition: dict,
    description: str,
    members: list[RecordView],
    total: int,
    config: PatternConfig,
    direction: bool | None = None,
) -> FoundPattern | None:
    n = len(members)
    if n < config.min_support:
        return None
    wins = sum(bool(r.success) for r in members)
    rate = wins / n
    predicts_success = rate >= 0.5 if direction is None else direction
    confidence = _wilson_low(wins if predicts_success else n - wins, n)
    if confidence < config.min_confidence:
        return None
    return FoundPattern(kind, condition, description, predicts_success, rate, n / total, n, confidence)


def discover(records: list[RecordView], config: PatternConfig | None = None) -> list[FoundPattern]:
    """Every pattern of the five kinds that the evaluated ``records`` support."""
    config = config or PatternConfig()
    records = [r for r in records if r.success is not None]
    total = len(records)
    if total == 0:
        return []
    found = [
        _pattern(
            "high_confidence",
            {"min_confidence": config.high_confidence},
            f"stated confidence >= {config.high_confidence}",
            [r for r in records if r.confidence >= config.high_confidence],
            total,
            config,
        ),
        _pattern(
            "consensus",
            {"min_agents": config.consensus_agents},
            f"{config.consensus_agents} or more agents recommend the same action on the same subject",
            [r for r in records if r.agreeing_agents >= config.consensus_agents],
            total,
            config,
        ),
    ]
    by_agent: dict[str, list[RecordView]] = defaultdict(list)
    by_action: dict[tuple[str, str], list[RecordView]] = defaultdict(list)
    for r in records:
        by_agent[r.agent].append(r)
        if r.action is not None:
            by_action[(r.kind, r.action)].append(r)
    for agent, members in sorted(by_agent.items()):
        if sum(bool(r.success) for r in members) / len(members) >= config.expert_approval:
            found.append(
                _pattern(
                    "expert_opinion",
                    {"agent": agent},
                    f"recommended by {agent!r}, approval rate >= {config.expert_approval}",
                    members,
                    total,
                    config,
                    direction=True,
                )
            )
    for (kind, action), members in sorted(by_action.items()):
        rate = sum(bool(r.success) for r in members) / len(members)
        if rate >= config.indicator_rate:
            found.append(
                _pattern(
                    "success_indicator",
                    {"type": kind, "action": action},
                    f"{kind}/{action} usually succeeds",
                    members,
                    total,
                    config,
                    direction=True,
                )
            )
        elif rate <= config.avoidance_rate:
            found.append(
                _pattern(
                    "failure_avoidance",
                    {"type": kind, "action": action},
                    f"{kind}/{action} usually fails: avoid",
                    members,
                    total,
                    config,
                    direction=False,
                )
            )
    return [p for p in found if p is not None]


def predict(record: RecordView, patterns: list[FoundPattern]) -> FoundPattern | None:
    """The most confident pattern the record meets, or None when no pattern covers it."""
    matching = [p for p in patterns if p.matches(record)]
    return max(matching, key=lambda p: p.confidence) if matching else None


def accuracy_and_coverage(records: list[RecordView], patterns: list[FoundPattern]) -> dict[str, float]:
    """On evaluated records: coverage = share predicted by some pattern; accuracy = share of those predicted right."""
    covered = correct = 0
    for r in records:
        pattern = predict(r, patterns)
        if pattern is not None:
            covered += 1
            correct += pattern.predicts_success == bool(r.success)
    return {
        "coverage": covered / len(records) if records else 0.0,
        "accuracy": correct / covered if covered else 0.0,
        "covered": covered,
        "records": len(records),
    }


class PatternService:
    """Discovers and stores the patterns of one workspace; predicts a recommendation's outcome from them."""

    def __init__(self, session: Session, workspace: str, config: PatternConfig | None = None):
        self.session = session
        self.workspace = workspace
        self.config = config or PatternConfig()

    def _views(self, evaluated_only: bool) -> list[RecordView]:
        rows = self.session.execute(
            select(
                Recommendation.agent,
                Recommendation.kind,
                Recommendation.action,
                Recommendation.subject,
                Recommendation.confidence,
                Evaluation.success,
            )
            .outerjoin(Evaluation, Evaluation.recommendation_id == Recommendation.id)
            .where(Recommendation.workspace == self.workspace)
        ).all()
        counts = agreeing_agents((a, s, act) for a, _, act, s, _, _ in rows)
        views = [
            RecordView(
                a,
                k,
                act,
                c,
                counts.get((s, act), 1) if s is not None and act is not None else 1,
                None if ok is None else bool(ok),
            )
            for a, k, act, s, c, ok in rows
        ]
        return [v for v in views if v.success is not None] if evaluated_only else views

    def refresh(self) -> list[FoundPattern]:
        """Recompute all patterns and replace the stored ones (safe to run twice)."""
        found = discover(self._views(evaluated_only=True), self.config)
        self.session.execute(delete(Pattern).where(Pattern.workspace == self.workspace))
        now = utcnow()
        for p in found:
            self.session.add(
                Pattern(
                    workspace=self.workspace,
                    kind=p.kind,
                    condition=p.condition,
                    description=p.description,
                    predicts_success=p.predicts_success,
                    success_rate=p.success_rate,
                    frequency=p.frequency,
                    support=p.support,
                    confidence=p.confidence,
                    computed_at=now,
                )
            )
        self.session.flush()
        return found

    def stored(self) -> list[FoundPattern]:
        rows = self.session.scalars(select(Pattern).where(Pattern.workspace == self.workspace).order_by(Pattern.id))
        return [
            FoundPattern(
                p.kind,
                p.condition,
                p.description,
                p.predicts_success,
                p.success_rate,
                p.frequency,
                p.support,
                p.confidence,
            )
            for p in rows
        ]

    def model_quality(self) -> dict[str, float]:
        """Accuracy and coverage of the stored patterns on the evaluated recommendations (in-sample)."""
        return accuracy_and_coverage(self._views(evaluated_only=True), self.stored())

    def predict_for(self, recommendation: Recommendation) -> FoundPattern | None:
        agreeing = 1
        if recommendation.subject is not None and recommendation.action is not None:
            agreeing = len(
                set(
                    self.session.scalars(
                        select(Recommendation.agent).where(
                            Recommendation.workspace == self.workspace,
                            Recommendation.subject == recommendation.subject,
                            Recommendation.action == recommendation.action,
                        )
                    )
                )
            )
        view = RecordView(
            recommendation.agent,
            recommendation.kind,
            recommendation.action,
            recommendation.confidence,
            max(agreeing, 1),
        )
        return predict(view, self.stored())
