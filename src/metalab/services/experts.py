"""Expert registry and learned consensus over the store: a shell around :mod:`metalab.consensus`.

Each method loads rows, calls one core function and writes the result; the math (greedy set cover,
votes, the weighted majority update and its bound) lives in the core only. A round's outcome updates
the weights and records of the experts that took a position in it, once: a second outcome is a 409.
Two weights are learned from every outcome: the weighted-majority weight (``method="weighted"``) and the
logistic vote weight (``method="learned"``), whose gradient step is ``LOGISTIC_STEP / sqrt(n + 1)`` after
``n`` resolved rounds of the workspace (the decreasing rate of Zinkevich's online gradient descent).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metalab import consensus as core
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.store.models import ConsensusRound, Expert, utcnow

LOGISTIC_STEP = 1.0


def record_of(expert: Expert) -> float:
    """Beta(1, 1) posterior mean accuracy over the resolved rounds: 0.5 for a newcomer."""
    return (expert.correct + 1.0) / (expert.resolved + 2.0)


class ExpertService:
    """Experts, teams and consensus rounds of one workspace."""

    def __init__(self, session: Session, workspace: str) -> None:
        self.session, self.workspace = session, workspace

    # ---- registry ----------------------------------------------------------------------------------------
    def register(self, name: str, skills: dict[str, int], kind: str = "agent") -> Expert:
        """A new expert at weight 1 (the largest weight there is) and no record; a taken name is a 409 (a
        concurrent registration of the same name fails on the unique constraint, which the API also maps to 409)."""
        taken = select(Expert.id).where(Expert.workspace == self.workspace, Expert.name == name)
        if self.session.scalar(taken) is not None:
            raise Conflict(f"expert {name!r} is already registered in this workspace")
        expert = Expert(
            workspace=self.workspace,
            name=name,
            kind=kind,
            skills=dict(skills),
            weight=1.0,
            vote_weight=1.0,
            correct=0,
            resolved=0,
        )
        self.session.add(expert)
        self.session.flush()
        return expert

    def get(self, name: str) -> Expert:
        found = self.session.scalar(select(Expert).where(Expert.workspace == self.workspace, Expert.name == name))
        if found is None:
            raise NotFound(f"no expert {name!r} in this workspace")
        return found

    def list(self, limit: int = 50, cursor: int = 0) -> list[Expert]:
        return list(
            self.session.scalars(
                select(Expert)
                .where(Expert.workspace == self.workspace, Expert.id > cursor)
                .order_by(Expert.id)
                .limit(limit)
            )
        )

    def _by_name(self, names: set[str] | None = None, lock: bool = False) -> dict[str, Expert]:
        query = select(Expert).where(Expert.workspace == self.workspace)
        if names is not None:
            query = query.where(Expert.name.in_(sorted(names)))
        if lock:
            query = query.with_for_update()
        return {e.name: e for e in self.session.scalars(query.order_by(Expert.id))}

    # ---- teams -------------------------------------------------------------------------------------------
    def team(self, required: dict[str, int], max_size: int | None = None) -> tuple[core.Team, dict[str, Expert]]:
        experts = self._by_name()
        candidates = [core.Candidate(e.name, e.skills, record_of(e)) for e in experts.values()]
        try:
            return core.assemble_team(candidates, required, max_size), experts
        except core.ConsensusInputError as error:  # the schema holds the body's own rules: the registry's fault
            raise Conflict(str(error)) from None

    # ---- rounds ------------------------------------------------------------------------------------------
    def run_round(
        self,
        question: str,
        proposals: list[core.Proposal],
        critiques: list[core.Critique],
        method: str,
        moderator: str | None = None,
        beta: float = 0.5,
        answers: int | None = None,
    ) -> tuple[ConsensusRound, core.Decision]:
        names = {p.expert for p in proposals} | {c.expert for c in critiques} | ({moderator} if moderator else set())
        experts = self._by_name(names)
        if unknown := sorted(names - set(experts)):
            raise NotFound(
                "unregistered experts: "
                + ", ".join(repr(n) for n in unknown)
                + "; register them with POST .../experts first"
            )
        try:
            weights = {n: e.vote_weight if method == "learned" else e.weight for n, e in experts.items()}
            decision = core.decide(
                proposals,
                critiques,
                method,
                weights=weights,
                records={n: (e.correct, e.resolved) for n, e in experts.items()},
                moderator=moderator,
                answers=answers,
            )
        except core.ConsensusInputError as error:
            raise Unprocessable(str(error)) from None
        row = ConsensusRound(
            workspace=self.workspace,
            question=question,
            method=method,
            beta=beta,
            answers=answers,
            proposals=[asdict(p) for p in proposals],
            critiques=[asdict(c) for c in critiques],
            positions=decision.positions,
            decision=decision.answer,
            confidence=decision.confidence,
            transcript=decision.transcript,
        )
        self.session.add(row)
        self.session.flush()
        return row, decision

    def get_round(self, round_id: int) -> ConsensusRound:
        found = self.session.scalar(
            select(ConsensusRound).where(ConsensusRound.workspace == self.workspace, ConsensusRound.id == round_id)
        )
        if found is None:
            raise NotFound(f"no consensus round {round_id} in this workspace")
        return found

    def resolve(self, round_id: int, outcome: str) -> tuple[ConsensusRound, dict[str, Expert]]:
        """Record the right answer: the weighted majority update and the records of the round's experts."""
        row = self.session.scalar(
            select(ConsensusRound)
            .where(ConsensusRound.workspace == self.workspace, ConsensusRound.id == round_id)
            .with_for_update()
        )
        if row is None:
            raise NotFound(f"no consensus round {round_id} in this workspace")
        if row.outcome is not None:
            raise Conflict(f"consensus round {round_id} already has its outcome {row.outcome!r}")
        experts = self._by_name(set(row.positions), lock=True)
        everyone = self._by_name(lock=True)
        updated = core.weighted_majority_update(
            {n: e.weight for n, e in everyone.items()}, row.positions, outcome, row.beta
        )
        resolved_before = self.session.scalar(
            select(func.count())
            .select_from(ConsensusRound)
            .where(ConsensusRound.workspace == self.workspace, ConsensusRound.outcome.is_not(None))
        )
        answers = max(row.answers or 2, len(set(row.positions.values()) | {outcome}))
        voted = core.logistic_vote_update(
            {n: e.vote_weight for n, e in experts.items()},
            row.positions,
            outcome,
            answers,
            LOGISTIC_STEP / math.sqrt(resolved_before + 1),
        )
        for name, expert in everyone.items():
            expert.weight = updated[name]
        for name, expert in experts.items():
            expert.vote_weight = voted[name]
        for name, expert in experts.items():
            expert.resolved += 1
            expert.correct += int(row.positions[name] == outcome)
        row.outcome, row.resolved_at = outcome, utcnow()
        self.session.flush()
        return row, experts

    @staticmethod
    def round_summary(row: ConsensusRound) -> dict[str, Any]:
        return {
            "id": row.id,
            "question": row.question,
            "method": row.method,
            "decision": row.decision,
            "confidence": row.confidence,
            "positions": row.positions,
            "transcript": row.transcript,
            "outcome": row.outcome,
            "correct": None if row.outcome is None else row.outcome == row.decision,
            "created_at": row.created_at,
            "resolved_at": row.resolved_at,
        }
