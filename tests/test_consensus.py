"""metalab.consensus: team assembly against brute force, votes, and the weighted majority rule and its bound."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from metalab import consensus as c


def _brute_force(candidates: list[c.Candidate], required: dict[str, int]) -> float | None:
    """The cheapest cover by enumerating every subset (None if no subset covers)."""
    best = None
    for size in range(1, len(candidates) + 1):
        for team in itertools.combinations(candidates, size):
            held = set()
            for member in team:
                held |= {s for s, level in required.items() if member.skills.get(s, 0) >= level}
            if held == set(required):
                cost = sum(2.0 - m.record for m in team)
                best = cost if best is None else min(best, cost)
    return best


def _random_registry(rng: np.random.Generator) -> tuple[list[c.Candidate], dict[str, int]]:
    pool = ["nlp", "vision", "rl", "stats", "systems"]
    candidates = []
    for i in range(int(rng.integers(1, 8))):
        held = rng.choice(pool, size=int(rng.integers(1, 4)), replace=False)
        candidates.append(
            c.Candidate(f"e{i}", {str(s): int(rng.integers(1, 6)) for s in held}, float(rng.uniform(0, 1)))
        )
    required = {str(s): int(rng.integers(1, 4)) for s in rng.choice(pool, size=int(rng.integers(1, 5)), replace=False)}
    return candidates, required


def test_greedy_team_against_brute_force_on_small_registries():
    rng = np.random.default_rng(0)
    optimal_found = feasible = 0
    for _ in range(300):
        candidates, required = _random_registry(rng)
        optimum = _brute_force(candidates, required)
        if optimum is None:
            with pytest.raises(c.ConsensusInputError, match="no registered expert covers"):
                c.assemble_team(candidates, required)
            continue
        feasible += 1
        team = c.assemble_team(candidates, required)
        by_name = {x.name: x for x in candidates}
        assert set(team.covered) == set(required)
        for skill, member in team.covered.items():
            assert member in team.members and by_name[member].skills.get(skill, 0) >= required[skill]
        assert team.cost == pytest.approx(sum(2 - by_name[m].record for m in team.members))
        assert team.cost <= team.bound * optimum + 1e-9  # Chvátal's H(d) guarantee
        optimal_found += math.isclose(team.cost, optimum)
    assert feasible > 100
    assert optimal_found / feasible > 0.8  # greedy is usually exact on registries this small


def test_team_prefers_the_better_record_and_fewer_members():
    candidates = [
        c.Candidate("weak", {"nlp": 5, "vision": 5}, 0.2),
        c.Candidate("strong", {"nlp": 5, "vision": 5}, 0.9),
        c.Candidate("a", {"nlp": 5}, 1.0),
        c.Candidate("b", {"vision": 5}, 1.0),
    ]
    assert c.assemble_team(candidates, {"nlp": 3, "vision": 4}).members == ["strong"]
    assert c.assemble_team(candidates[2:], {"nlp": 3, "vision": 4}).members == ["a", "b"]
    with pytest.raises(c.ConsensusInputError, match="more than max_size=1"):
        c.assemble_team(candidates[2:], {"nlp": 3, "vision": 4}, max_size=1)
    with pytest.raises(c.ConsensusInputError, match="rl \\(level >= 2\\)"):
        c.assemble_team(candidates, {"rl": 2})


def test_votes_and_positions():
    proposals = [c.Proposal("a", "yes", 0.9), c.Proposal("b", "no", 0.6), c.Proposal("d", "no", 0.3)]
    critiques = [c.Critique("e", 0, 0.8), c.Critique("e", 1, 0.2), c.Critique("f", 1, -0.5), c.Critique("g", 0, 0.7)]
    majority = c.decide(proposals, critiques, "majority")
    assert majority.positions == {"a": "yes", "b": "no", "d": "no", "e": "yes", "g": "yes"}  # f only disagreed
    assert majority.answer == "yes" and majority.confidence == pytest.approx(3 / 5)
    weighted = c.decide(proposals, critiques, "weighted", weights={"a": 0.1, "e": 0.1, "g": 0.1, "b": 1.0})
    assert weighted.answer == "no" and weighted.confidence == pytest.approx(2.0 / 2.3)
    assert [line["kind"] for line in weighted.transcript][:7] == ["proposal"] * 3 + ["critique"] * 4
    assert weighted.transcript[-1] == {
        "kind": "decision",
        "method": "weighted",
        "answer": "no",
        "confidence": pytest.approx(2.0 / 2.3),
    }
    moderated = c.decide(proposals, critiques, "moderator", moderator="g")
    assert (moderated.answer, moderated.confidence) == ("yes", 0.7)
    assert c.decide(proposals, critiques, "moderator", weights={"d": 2.0}).answer == "no"  # default: top weight
    records = {"a": (9, 10), "b": (1, 10), "d": (5, 10)}
    accuracy = c.decide(proposals, [], "accuracy", records=records)
    assert accuracy.weights["a"] == pytest.approx(math.log((10 / 12) / (2 / 12)))
    assert accuracy.weights["b"] == 0.0 and accuracy.answer == "yes"


@pytest.mark.parametrize(
    ("proposals", "critiques", "method", "message"),
    [
        ([], [], "majority", "needs at least one proposal"),
        ([c.Proposal("a", "x"), c.Proposal("a", "y")], [], "majority", "two proposals"),
        ([c.Proposal("a", "x", 1.5)], [], "majority", "must be in \\[0, 1\\]"),
        ([c.Proposal("a", "x")], [c.Critique("b", 3, 0.5)], "majority", "numbered 0..0"),
        ([c.Proposal("a", "x")], [c.Critique("a", 0, 0.5)], "majority", "its own proposal"),
        ([c.Proposal("a", "x")], [], "dictator", "method='dictator' is not allowed"),
        ([c.Proposal("a", "x")], [c.Critique("m", 0, -0.2)], "moderator-m", "made no proposal and agreed with none"),
    ],
)
def test_bad_rounds_are_one_clear_error(proposals, critiques, method, message):
    moderator = method.split("-")[1] if "-" in method else None
    with pytest.raises(c.ConsensusInputError, match=message):
        c.decide(proposals, critiques, method.split("-")[0], moderator=moderator)


def _simulate_wm(rng: np.random.Generator, accuracies: list[float], rounds: int, beta: float, answers: int):
    """Weighted majority through decide/update, and an independent count: weight_i = beta^(mistakes_i)."""
    names = [f"x{i}" for i in range(len(accuracies))]
    weights, mistakes, algorithm_mistakes = {n: 1.0 for n in names}, dict.fromkeys(names, 0), 0
    for _ in range(rounds):
        truth = int(rng.integers(answers))
        said = {}
        for n, p in zip(names, accuracies):
            said[n] = truth if rng.random() < p else int((truth + rng.integers(1, answers)) % answers)
        decision = c.decide([c.Proposal(n, str(a)) for n, a in said.items()], method="weighted", weights=weights)
        algorithm_mistakes += decision.answer != str(truth)
        weights = c.weighted_majority_update(weights, decision.positions, str(truth), beta)
        for n in names:
            mistakes[n] += said[n] != truth
        reference = {n: beta ** (mistakes[n] - min(mistakes.values())) for n in names}
        assert weights == pytest.approx(reference, rel=1e-9, abs=1e-300)
    return algorithm_mistakes, min(mistakes.values())


@pytest.mark.parametrize(("beta", "answers"), [(0.5, 2), (0.5, 4), (0.8, 3), (0.2, 2)])
def test_weighted_majority_weights_and_mistake_bound(beta, answers):
    rng = np.random.default_rng(int(beta * 10) + answers)
    for accuracies in ([0.9, 0.6, 0.55, 0.5, 0.4], [0.7] * 6, [1.0, 0.3, 0.3]):
        made, best = _simulate_wm(rng, accuracies, 300, beta, answers)
        assert made <= c.weighted_majority_bound(len(accuracies), best, beta)


def test_bound_formula():
    # Littlestone & Warmuth: beta = 1/2 gives (ln N + m ln 2) / ln(4/3) = 2.41 (m + log2 N)
    assert c.weighted_majority_bound(8, 10, 0.5) == pytest.approx((10 + 3) * math.log(2) / math.log(4 / 3))
    with pytest.raises(c.ConsensusInputError):
        c.weighted_majority_update({"a": 1.0}, {"a": "x"}, "y", beta=1.0)


def _log_loss(w: np.ndarray, said: list[str], truth: str, answers: list[str]) -> float:
    scores = np.array([sum(wi for wi, a in zip(w, said) if a == option) for option in answers])
    return float(np.log(np.exp(scores).sum()) - scores[answers.index(truth)])


def test_logistic_update_is_a_gradient_step_on_the_log_loss():
    rng = np.random.default_rng(3)
    answers = ["a", "b", "c", "d"]
    for _ in range(20):
        said = [str(rng.choice(answers[:3])) for _ in range(5)]
        truth = str(rng.choice(answers))
        w = rng.uniform(0.5, 2.0, size=5)
        names = [f"x{i}" for i in range(5)]
        step = 1e-3
        new = c.logistic_vote_update(dict(zip(names, w)), dict(zip(names, said)), truth, len(answers), step)
        numeric = [
            (
                _log_loss(w + 1e-6 * np.eye(5)[i], said, truth, answers)
                - _log_loss(w - 1e-6 * np.eye(5)[i], said, truth, answers)
            )
            / 2e-6
            for i in range(5)
        ]
        assert [new[n] for n in names] == pytest.approx(list(w - step * np.array(numeric)), abs=1e-8)
    clipped = c.logistic_vote_update({"x": 0.1}, {"x": "a"}, "b", 2, step=10.0)
    assert clipped == {"x": 0.0}  # projected onto w >= 0
