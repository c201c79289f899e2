"""Routes of the expert registry and learned consensus (issue 35.3), under ``/v1/workspaces/{workspace}``.

Same workspace auth, idempotency keys and error handling as the other routers; each route validates its body,
calls one :class:`~metalab.services.experts.ExpertService` method and shapes the answer. The schemas live
here, beside the only routes that use them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, StringConstraints

from metalab import consensus as core
from metalab.services.api.common import (
    ERRORS,
    V1,
    Cursor,
    Id,
    IdempotencyKey,
    Limit,
    Workspace_,
    cross_field,
    idempotent_write,
    page,
)
from metalab.services.api.common import sessions_for as _sessions
from metalab.services.api.schemas import NO_NUL, Page, Probability, ShortName, Strict, Text, columns
from metalab.services.errors import Unprocessable
from metalab.services.experts import ExpertService, record_of
from metalab.services.fields import JsonInt, json_int
from metalab.services.store.models import Expert


def _query_names(dependant: Any) -> set[str]:
    names = {q.alias for q in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query_only(request: Request) -> None:
    """A query parameter the route does not declare is a mistake to report, not to ignore (422)."""
    route = request.scope.get("route")
    allowed = _query_names(route.dependant) if route is not None else set()
    if unknown := sorted(set(request.query_params) - allowed):
        raise Unprocessable(
            "unknown query parameters: "
            + ", ".join(repr(u) for u in unknown)
            + (f"; this route takes {', '.join(sorted(allowed))}" if allowed else "; this route takes none")
        )


router = APIRouter(
    prefix=V1, tags=["experts and consensus"], dependencies=[Depends(known_query_only)], responses=ERRORS
)
ExpertName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[^\x00/]+$", description="expert name")]
Skill = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
Level = json_int(ge=1, le=core.MAX_LEVEL)
Answer = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class ExpertCreate(Strict):
    name: ShortName
    kind: Literal["agent", "model", "human"] = "agent"
    skills: dict[Skill, Level] = Field(max_length=100, description="skill -> level, 1 (novice) .. 5 (expert)")


class ExpertOut(BaseModel):
    name: str
    kind: str
    skills: dict[str, int]
    weight: float = Field(description="weighted-majority weight, rescaled so the workspace's largest is 1")
    vote_weight: float = Field(description="logistic vote weight (method=learned), learned by online gradient")
    correct: int
    resolved: int
    record: float = Field(description="(correct + 1) / (resolved + 2): posterior mean accuracy")
    created_at: datetime


class TeamRequest(Strict):
    required_skills: dict[Skill, Level] = Field(min_length=1, max_length=100)
    max_size: json_int(ge=1, le=1000) | None = None


class TeamOut(BaseModel):
    members: list[ExpertOut]
    covered_by: dict[str, str] = Field(description="skill -> the member chosen to cover it")
    cost: float = Field(description="sum of (2 - record) over the members")
    approximation_bound: float = Field(description="H(d): greedy cost <= this x the optimal cost (Chvátal 1979)")


class ProposalIn(Strict):
    expert: ShortName
    answer: Answer
    confidence: Probability = 1.0
    rationale: Text = ""


class CritiqueIn(Strict):
    expert: ShortName
    proposal: JsonInt = Field(ge=0, le=999, description="index of the proposal in this round")
    agreement: float = Field(ge=-1.0, le=1.0, description="-1 disagrees entirely .. 1 agrees entirely")
    comment: Text = ""


class RoundCreate(Strict):
    question: Text
    method: Literal["majority", "weighted", "learned", "accuracy", "moderator"] = "weighted"
    proposals: list[ProposalIn] = Field(min_length=1, max_length=200)
    critiques: list[CritiqueIn] = Field(default_factory=list, max_length=1000)
    moderator: ShortName | None = Field(
        None, description="method=moderator: whose call decides (default: the highest-weighted participant)"
    )
    beta: float = Field(0.5, ge=0.0, lt=1.0, description="weighted majority: a wrong expert's weight x beta")
    answers: json_int(ge=2, le=1000) | None = Field(
        None,
        description="how many answers the question has (accuracy, learned; default: those proposed, >= 2)",
    )


class RoundOut(BaseModel):
    id: int
    question: str
    method: str
    decision: str
    confidence: float
    positions: dict[str, str]
    transcript: list[dict[str, Any]]
    outcome: str | None
    correct: bool | None
    created_at: datetime
    resolved_at: datetime | None
    experts: list[ExpertOut] = Field(default_factory=list, description="after an outcome: the updated experts")


class OutcomeIn(Strict):
    answer: Answer


def expert_out(e: Expert) -> ExpertOut:
    return ExpertOut.model_validate({**columns(e), "record": record_of(e)})


def round_out(row, experts: list[Expert] | None = None) -> RoundOut:
    return RoundOut(**ExpertService.round_summary(row), experts=[expert_out(e) for e in experts or []])


@router.post("/experts", status_code=201, response_model=ExpertOut)
def register_expert(request: Request, workspace: Workspace_, body: ExpertCreate, key: IdempotencyKey = None):
    def write(session):
        return expert_out(ExpertService(session, workspace).register(body.name, body.skills, body.kind))

    return idempotent_write(request, workspace, key, body, write)


@router.get("/experts", response_model=Page[ExpertOut])
def list_experts(request: Request, workspace: Workspace_, limit: Limit = 50, cursor: Cursor = 0):
    with _sessions(request)() as session:
        found = ExpertService(session, workspace).list(limit, cursor)
        return page([expert_out(e) for e in found], [e.id for e in found], limit)


@router.get("/experts/{name}", response_model=ExpertOut)
def get_expert(request: Request, workspace: Workspace_, name: ExpertName):
    with _sessions(request)() as session:
        return expert_out(ExpertService(session, workspace).get(name))


@router.post("/teams", response_model=TeamOut)
def assemble_team(request: Request, workspace: Workspace_, body: TeamRequest):
    """The team that covers the required skills (greedy weighted set cover, preferring better records)."""
    with _sessions(request)() as session:
        team, experts = ExpertService(session, workspace).team(body.required_skills, body.max_size)
        return TeamOut(
            members=[expert_out(experts[n]) for n in team.members],
            covered_by=team.covered,
            cost=team.cost,
            approximation_bound=team.bound,
        )


ROUND_RULES = cross_field(
    "one proposal per expert; a critique names a proposal 0..len(proposals)-1 and not its own; a moderator "
    "proposes or endorses a proposal; 422 otherwise"
)


@router.post("/consensus/rounds", status_code=201, response_model=RoundOut, openapi_extra=ROUND_RULES)
def run_round(request: Request, workspace: Workspace_, body: RoundCreate, key: IdempotencyKey = None):
    """Decide a question from the experts' proposals and critiques; the transcript says who stood for what."""

    def write(session):
        proposals = [core.Proposal(p.expert, p.answer, p.confidence, p.rationale) for p in body.proposals]
        critiques = [core.Critique(c.expert, c.proposal, c.agreement, c.comment) for c in body.critiques]
        row, _ = ExpertService(session, workspace).run_round(
            body.question, proposals, critiques, body.method, body.moderator, body.beta, body.answers
        )
        return round_out(row)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/consensus/rounds/{round_id}", response_model=RoundOut)
def get_round(request: Request, workspace: Workspace_, round_id: Id):
    with _sessions(request)() as session:
        return round_out(ExpertService(session, workspace).get_round(round_id))


@router.post("/consensus/rounds/{round_id}/outcome", response_model=RoundOut)
def resolve_round(request: Request, workspace: Workspace_, round_id: Id, body: OutcomeIn, key: IdempotencyKey = None):
    """The right answer: each participant's weight is multiplied by beta if it was wrong; records updated."""

    def write(session):
        row, experts = ExpertService(session, workspace).resolve(round_id, body.answer)
        return round_out(row, list(experts.values()))

    return idempotent_write(request, workspace, key, body, write)
