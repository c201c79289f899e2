"""Expert teams and learned consensus: plain functions, no HTTP, no database (the expert service is a shell).

Three pieces:

* **Team assembly** as weighted set cover: each expert covers the required skills it holds at the required
  level or above, and costs ``2 - record`` (record in [0, 1], e.g. its estimated accuracy), so a team is first
  small and then made of better records. Chvátal's greedy rule (1979, "A greedy heuristic for the
  set-covering problem") picks the expert with the lowest cost per newly covered skill; its cost is within
  ``H(d) = 1 + 1/2 + ... + 1/d`` of the optimum, ``d`` the most required skills one expert covers.
* **Consensus rounds**: experts submit proposals (an answer and a confidence) and critiques (an agreement
  level in [-1, 1] with another's proposal). Each expert takes one position: its own proposal's answer, or,
  if it only critiqued, the answer of the proposal it agrees with most (when that agreement is positive).
  The decision is a majority vote, a weighted vote (weights learned by the weighted majority rule, or
  log-odds weights of each expert's estimated accuracy), or a moderator's call.
* **Learning from outcomes**: the weighted majority algorithm of Littlestone & Warmuth (1994, "The Weighted
  Majority Algorithm", Information and Computation 108) multiplies the weight of every expert whose position
  was wrong by ``beta``; its mistakes are at most ``(ln N + m ln(1/beta)) / ln(2/(1+beta))`` for ``N`` experts
  whose best makes ``m`` mistakes (:func:`weighted_majority_bound`). The bound holds for any number of answers:
  when the weighted plurality is wrong, the right answer held at most half the weight. Counting each
  expert's right and wrong positions gives a Beta(1, 1) posterior mean accuracy ``p``; for independent
  experts the vote that maximises the chance of a right decision weighs each by ``ln((K-1) p / (1-p))``
  (Nitzan & Paroush 1982 for two answers; the K-answer form assumes errors spread evenly over wrong answers).
  Those log-odds weights are the coefficients of a logistic model of the right answer given the votes, so
  they can also be learned directly, without assuming independence: :func:`logistic_vote_update` takes one
  projected online gradient step on the log-loss of the softmax of the weighted tallies (Zinkevich 2003,
  "Online convex programming and generalized infinitesimal gradient ascent": regret O(sqrt T) against any
  fixed non-negative weight vector). Experts who always vote together then share one expert's weight
  instead of outvoting the rest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Method = Literal["majority", "weighted", "learned", "accuracy", "moderator"]
METHODS: tuple[str, ...] = ("majority", "weighted", "learned", "accuracy", "moderator")
MAX_LEVEL = 5


class ConsensusInputError(ValueError):
    """An input a round or a team request cannot be decided on; the message says what to change."""


# ---- team assembly ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """An expert as team assembly sees it: skill -> level (1..5) and a record in [0, 1] (higher is better)."""

    name: str
    skills: Mapping[str, int]
    record: float = 0.5

    def covers(self, required: Mapping[str, int]) -> frozenset[str]:
        return frozenset(s for s, level in required.items() if self.skills.get(s, 0) >= level)

    @property
    def cost(self) -> float:
        return 2.0 - self.record


@dataclass(frozen=True)
class Team:
    members: list[str]
    cost: float
    covered: dict[str, str]  # skill -> the member chosen to cover it
    bound: float  # H(d): the greedy cost is at most bound x the optimal cost


def harmonic(d: int) -> float:
    return sum(1.0 / k for k in range(1, d + 1))


def assemble_team(candidates: Sequence[Candidate], required: Mapping[str, int], max_size: int | None = None) -> Team:
    """Chvátal's greedy weighted set cover of ``required`` (skill -> minimum level); ties go to the better
    record, then the name. Raises ConsensusInputError naming the skills nobody covers, or if the team would
    need more than ``max_size`` members."""
    if not required:
        raise ConsensusInputError("required_skills is empty: name at least one skill and its minimum level")
    for skill, level in required.items():
        if not 1 <= level <= MAX_LEVEL:
            raise ConsensusInputError(f"required level of {skill!r} is {level}; levels are 1..{MAX_LEVEL}")
    reach = {c.name: c.covers(required) for c in candidates}
    coverable = frozenset().union(*reach.values()) if reach else frozenset()
    if missing := sorted(set(required) - coverable):
        raise ConsensusInputError(
            "no registered expert covers " + ", ".join(f"{s} (level >= {required[s]})" for s in missing)
        )
    uncovered, members, covered, cost = set(required), [], {}, 0.0
    by_name = {c.name: c for c in candidates}
    while uncovered:
        best = min(
            (c for c in candidates if c.name not in members and reach[c.name] & uncovered),
            key=lambda c: (c.cost / len(reach[c.name] & uncovered), -c.record, c.name),
        )
        for skill in reach[best.name] & uncovered:
            covered[skill] = best.name
        uncovered -= reach[best.name]
        members.append(best.name)
        cost += by_name[best.name].cost
    if max_size is not None and len(members) > max_size:
        raise ConsensusInputError(
            f"covering the required skills takes {len(members)} experts (greedy), more than max_size={max_size}"
        )
    return Team(members, cost, covered, harmonic(max(len(r) for r in reach.values())))


# ---- consensus rounds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proposal:
    expert: str
    answer: str
    confidence: float = 1.0
    rationale: str = ""


@dataclass(frozen=True)
class Critique:
    expert: str
    proposal: int  # index into the round's proposals
    agreement: float  # -1 (disagrees entirely) .. 1 (agrees entirely)
    comment: str = ""


@dataclass
class Decision:
    answer: str
    confidence: float  # the winning share of the votes (weighted), or the moderator's own confidence
    method: str
    tally: dict[str, float]
    positions: dict[str, str]  # expert -> the answer it stands for
    weights: dict[str, float]  # expert -> the vote weight used
    transcript: list[dict] = field(default_factory=list)


def _validate_round(proposals: Sequence[Proposal], critiques: Sequence[Critique]) -> None:
    if not proposals:
        raise ConsensusInputError("a consensus round needs at least one proposal; it has none")
    seen: set[str] = set()
    for p in proposals:
        if p.expert in seen:
            raise ConsensusInputError(f"expert {p.expert!r} made two proposals; one proposal per expert")
        if not 0.0 <= p.confidence <= 1.0:
            raise ConsensusInputError(f"confidence of {p.expert!r} is {p.confidence}; it must be in [0, 1]")
        seen.add(p.expert)
    for c in critiques:
        if not 0 <= c.proposal < len(proposals):
            raise ConsensusInputError(
                f"critique by {c.expert!r} names proposal {c.proposal}; proposals are numbered 0..{len(proposals) - 1}"
            )
        if not -1.0 <= c.agreement <= 1.0:
            raise ConsensusInputError(f"agreement of {c.expert!r} is {c.agreement}; it must be in [-1, 1]")
        if proposals[c.proposal].expert == c.expert:
            raise ConsensusInputError(f"expert {c.expert!r} critiques its own proposal {c.proposal}")


def positions_of(proposals: Sequence[Proposal], critiques: Sequence[Critique]) -> dict[str, str]:
    """Each expert's answer: its proposal's, else that of the proposal it agrees with most (if positively)."""
    _validate_round(proposals, critiques)
    positions = {p.expert: p.answer for p in proposals}
    best: dict[str, tuple[float, int]] = {}
    for c in critiques:
        if c.expert not in positions and c.agreement > 0 and (c.agreement, -c.proposal) > best.get(c.expert, (0, 0)):
            best[c.expert] = (c.agreement, -c.proposal)
    for expert, (_, negative_index) in best.items():
        positions[expert] = proposals[-negative_index].answer
    return positions


def accuracy_weight(correct: int, total: int, answers: int) -> float:
    """ln((K-1) p / (1-p)) of the Beta(1, 1) posterior mean accuracy p, floored at 0 (a worse-than-chance
    expert is ignored rather than inverted; with K > 2 answers its wrong answer names no right one)."""
    p = (correct + 1.0) / (total + 2.0)
    return max(0.0, math.log(max(answers - 1, 1) * p / (1.0 - p)))


def decide(
    proposals: Sequence[Proposal],
    critiques: Sequence[Critique] = (),
    method: str = "majority",
    weights: Mapping[str, float] | None = None,
    records: Mapping[str, tuple[int, int]] | None = None,
    moderator: str | None = None,
    answers: int | None = None,
) -> Decision:
    """The round's decision. ``weights``: the vote weights of ``method="weighted"`` (weighted majority) or
    ``"learned"`` (logistic) (missing experts weigh 1);
    ``records``: expert -> (correct, total) for ``method="accuracy"``; ``answers``: how many answers the
    question has (default: at least 2, or the distinct answers proposed); ``moderator``: for
    ``method="moderator"``, the expert whose call decides (default: the highest-weighted participant)."""
    if method not in METHODS:
        raise ConsensusInputError(f"method={method!r} is not allowed: one of {', '.join(METHODS)}")
    positions = positions_of(proposals, critiques)
    transcript = _transcript(proposals, critiques)
    if method == "moderator":
        return _moderate(proposals, critiques, positions, weights or {}, moderator, transcript)
    k = max(answers or 2, len({p.answer for p in proposals}))
    if method == "majority":
        vote = {e: 1.0 for e in positions}
    elif method in ("weighted", "learned"):
        vote = {e: float((weights or {}).get(e, 1.0)) for e in positions}
    else:
        vote = {e: accuracy_weight(*(records or {}).get(e, (0, 0)), k) for e in positions}
    tally: dict[str, float] = defaultdict(float)
    confidence_sum: dict[str, float] = defaultdict(float)
    for expert, answer in positions.items():
        tally[answer] += vote[expert]
    for p in proposals:
        confidence_sum[p.answer] += p.confidence
    winner = min(tally, key=lambda a: (-tally[a], -confidence_sum[a], a))
    total = sum(tally.values())
    confidence = tally[winner] / total if total > 0 else 1.0 / len(tally)
    transcript += [{"kind": "vote", "expert": e, "answer": a, "weight": vote[e]} for e, a in positions.items()]
    transcript.append({"kind": "decision", "method": method, "answer": winner, "confidence": confidence})
    return Decision(winner, confidence, method, dict(tally), positions, vote, transcript)


def _transcript(proposals: Sequence[Proposal], critiques: Sequence[Critique]) -> list[dict]:
    lines = [
        {
            "kind": "proposal",
            "index": i,
            "expert": p.expert,
            "answer": p.answer,
            "confidence": p.confidence,
            "rationale": p.rationale,
        }
        for i, p in enumerate(proposals)
    ]
    lines += [
        {"kind": "critique", "expert": c.expert, "proposal": c.proposal, "agreement": c.agreement, "comment": c.comment}
        for c in critiques
    ]
    return lines


def _moderate(
    proposals: Sequence[Proposal],
    critiques: Sequence[Critique],
    positions: dict[str, str],
    weights: Mapping[str, float],
    moderator: str | None,
    transcript: list[dict],
) -> Decision:
    """The moderator's own proposal decides, else the proposal its critiques agree with most."""
    if moderator is None:
        moderator = min(positions, key=lambda e: (-weights.get(e, 1.0), e))
    own = next((p for p in proposals if p.expert == moderator), None)
    if own is not None:
        answer, confidence = own.answer, own.confidence
    else:
        endorsed = [c for c in critiques if c.expert == moderator and c.agreement > 0]
        if not endorsed:
            raise ConsensusInputError(
                f"moderator {moderator!r} made no proposal and agreed with none; "
                "the moderator must propose or endorse a proposal"
            )
        choice = max(endorsed, key=lambda c: (c.agreement, -c.proposal))
        answer, confidence = proposals[choice.proposal].answer, choice.agreement
    transcript.append(
        {"kind": "decision", "method": "moderator", "moderator": moderator, "answer": answer, "confidence": confidence}
    )
    return Decision(answer, confidence, "moderator", {answer: 1.0}, positions, {moderator: 1.0}, transcript)


# ---- learning from outcomes ------------------------------------------------------------------------------
def weighted_majority_update(
    weights: Mapping[str, float], positions: Mapping[str, str], truth: str, beta: float = 0.5
) -> dict[str, float]:
    """Littlestone & Warmuth's rule: every expert whose position was wrong has its weight multiplied by
    ``beta``; then all are rescaled so the largest is 1 (a common factor changes no vote, and keeps the
    weights away from underflow). Experts absent from ``positions`` keep their weight (before rescaling)."""
    if not 0.0 <= beta < 1.0:
        raise ConsensusInputError(f"beta={beta} is not allowed: beta must be in [0, 1)")
    new = {e: float(w) * (beta if e in positions and positions[e] != truth else 1.0) for e, w in weights.items()}
    for expert in positions:
        new.setdefault(expert, beta if positions[expert] != truth else 1.0)
    top = max(new.values(), default=0.0)
    return {e: w / top for e, w in new.items()} if top > 0 else new


def weighted_majority_bound(n_experts: int, best_mistakes: int, beta: float) -> float:
    """Littlestone & Warmuth (1994): the weighted majority algorithm makes at most this many mistakes."""
    if n_experts < 1 or not 0.0 < beta < 1.0:
        raise ConsensusInputError("the bound needs n_experts >= 1 and beta in (0, 1)")
    return (math.log(n_experts) + best_mistakes * math.log(1.0 / beta)) / math.log(2.0 / (1.0 + beta))


def logistic_vote_update(
    weights: Mapping[str, float], positions: Mapping[str, str], truth: str, answers: int, step: float
) -> dict[str, float]:
    """One projected gradient step on -log P(truth), P = softmax over the ``answers`` possible answers of the
    weighted tallies (answers nobody stood for score 0): an expert's weight rises when it stood for the truth
    with less than certainty and falls when it stood for a wrong answer the vote found likely; weights stay >= 0."""
    if step <= 0 or answers < 2:
        raise ConsensusInputError("the logistic update needs step > 0 and answers >= 2")
    tally: dict[str, float] = defaultdict(float)
    for expert, answer in positions.items():
        tally[answer] += float(weights.get(expert, 1.0))
    unvoted = max(answers - len(tally), 0)
    top = max(max(tally.values(), default=0.0), 0.0)
    normaliser = sum(math.exp(v - top) for v in tally.values()) + unvoted * math.exp(-top)
    probability = {a: math.exp(v - top) / normaliser for a, v in tally.items()}
    new = dict(weights)
    for expert, answer in positions.items():
        gradient = probability[answer] - (1.0 if answer == truth else 0.0)
        new[expert] = max(0.0, float(weights.get(expert, 1.0)) - step * gradient)
    return new
