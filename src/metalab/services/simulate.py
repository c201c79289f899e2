"""Simulators with known ground truth for the services, used by ``experiments/services/*.py`` (full size)
and by the unit tests (small size). Each calls the services' own functions, never a copy of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from metalab.services.bandits import policy_for
from metalab.services.experiments import (
    CONTINUE,
    ExperimentSpec,
    all_pairs,
    best_arm_verdict,
    control_verdict,
    pair_p_values,
)
from metalab.services.patterns import RecordView, agreeing_agents
from metalab.services.trust import EvaluatedOutcome, TrustConfig, compute_trust


# ---- experiment engine ------------------------------------------------------------------------------------
def sequential_monitoring(
    n_experiments: int,
    horizon: int,
    means: list[float],
    binary: bool,
    *,
    alpha: float = 0.05,
    mixture_scale: float = 0.1,
    min_samples: int = 100,
    sd: float = 1.0,
    allocation: str = "equal",
    rule: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``n_experiments`` experiments side by side, deciding after every outcome, up to ``horizon``.

    The decision rule is the engine's own (``rule``: "control" = mSPRT against the control, "best_arm" =
    an arm beats every other arm; by default the one the engine uses for ``allocation``). Returns the
    outcome count at which each experiment first decided (0 = never), the arm it named (-1 = none), the
    share that decided, and the cumulative pseudo-regret of the allocation (pulls of the best mean lost).
    """
    rng = np.random.default_rng(seed)
    k = len(means)
    spec = ExperimentSpec(
        name="simulated",
        variants=[str(i) for i in range(k)],
        allocation=allocation,
        alpha=alpha,
        mixture_scale=mixture_scale,
        min_samples_per_variant=min_samples,
    )
    best_arm = (rule or ("best_arm" if spec.adaptive else "control")) == "best_arm"
    level = alpha / max(k - 1, 1)
    first, second = all_pairs(k) if best_arm else (np.zeros(k - 1, dtype=int), np.arange(1, k))
    count, total, squares = (np.zeros((n_experiments, k)) for _ in range(3))
    running_min = np.ones((n_experiments, len(first)))
    stopped_at = np.zeros(n_experiments, dtype=int)
    named = np.full(n_experiments, -1)
    rows = np.arange(n_experiments)
    policy = policy_for(allocation)
    mean_of_arm = np.asarray(means, dtype=float)
    regret = np.zeros(n_experiments)
    for t in range(1, horizon + 1):
        arm = policy.choose(count, total, squares, binary, rng)
        m = mean_of_arm[arm]
        regret += mean_of_arm.max() - m
        y = (rng.random(n_experiments) < m).astype(float) if binary else rng.normal(m, sd)
        count[rows, arm] += 1
        total[rows, arm] += y
        squares[rows, arm] += y * y
        difference, *_, p_now = pair_p_values(count, total, squares, binary, mixture_scale, min_samples, first, second)
        running_min = np.minimum(running_min, p_now)
        if best_arm:
            code, index = best_arm_verdict(difference, running_min, level, k)
        else:
            code, index = control_verdict(difference, running_min, level)
        newly = (stopped_at == 0) & (code != CONTINUE)
        stopped_at[newly], named[newly] = t, index[newly]
    rejected = stopped_at > 0
    return {
        "stopped_at": stopped_at,
        "named": named,
        "rejection_rate": float(rejected.mean()),
        "mean_stopping_time": float(stopped_at[rejected].mean()) if rejected.any() else None,
        "regret": regret,
    }


def bandit_regret(allocation: str, means: list[float], pulls: int, runs: int, seed: int = 0) -> np.ndarray:
    """Cumulative pseudo-regret (best mean - pulled arm's mean), shape [runs, pulls], all runs at once."""
    rng = np.random.default_rng(seed)
    k = len(means)
    mean_of_arm = np.asarray(means, dtype=float)
    count, total, squares = (np.zeros((runs, k)) for _ in range(3))
    rows = np.arange(runs)
    policy = policy_for(allocation)
    regret = np.empty((runs, pulls))
    for t in range(pulls):
        arm = policy.choose(count, total, squares, True, rng)
        y = (rng.random(runs) < mean_of_arm[arm]).astype(float)
        count[rows, arm] += 1
        total[rows, arm] += y
        squares[rows, arm] += y
        regret[:, t] = mean_of_arm.max() - mean_of_arm[arm]
    return np.cumsum(regret, axis=1)


def mabwiser_regret(allocation: str, means: list[float], pulls: int, runs: int, seed: int = 0) -> np.ndarray:
    """The same experiment with MABWiser's ThompsonSampling / UCB1(alpha=1) (Kilitcioglu and Kadioglu, 2019).

    Like our policies, each run first pulls every arm once; then predict / partial_fit one pull at a time.
    """
    from mabwiser.mab import MAB, LearningPolicy

    policies = {"thompson": LearningPolicy.ThompsonSampling, "ucb": lambda: LearningPolicy.UCB1(alpha=1.0)}
    rng = np.random.default_rng(seed)
    mean_of_arm = np.asarray(means, dtype=float)
    arms = list(range(len(means)))
    regret = np.empty((runs, pulls))
    for run in range(runs):
        first = [int(a) for a in rng.permutation(arms)]
        rewards = [int(rng.random() < mean_of_arm[a]) for a in first]
        bandit = MAB(arms=arms, learning_policy=policies[allocation](), seed=int(rng.integers(2**31)))
        bandit.fit(decisions=first, rewards=rewards)
        chosen = list(first)
        for _ in range(pulls - len(first)):
            arm = int(bandit.predict())
            bandit.partial_fit(decisions=[arm], rewards=[int(rng.random() < mean_of_arm[arm])])
            chosen.append(arm)
        regret[run] = mean_of_arm.max() - mean_of_arm[np.array(chosen[:pulls])]
    return np.cumsum(regret, axis=1)


# ---- trust ------------------------------------------------------------------------------------------------
def agent_outcome(accuracy: float, rng: np.random.Generator) -> EvaluatedOutcome:
    """One evaluated recommendation of an agent that is right with probability ``accuracy``.

    Quality is near 0.85 when right and near 0.2 when wrong; the stated confidence is uninformative
    (uniform 0.6-0.9) and timeliness is noise unrelated to accuracy, so only accuracy separates agents.
    """
    success = bool(rng.random() < accuracy)
    quality = float(np.clip((0.85 if success else 0.2) + rng.normal(0, 0.1), 0, 1))
    return EvaluatedOutcome(success, quality, float(rng.uniform(0.6, 0.9)), float(rng.uniform(0.6, 1.0)))


def trust_ranking(accuracies: list[float], outcomes: int, config: TrustConfig, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [
        compute_trust(f"agent{i}", [agent_outcome(a, rng) for _ in range(outcomes)], config).trust
        for i, a in enumerate(accuracies)
    ]


def outcomes_until_distrusted(
    good: float, bad: float, before: int, after: int, config: TrustConfig, seed: int = 0
) -> int | None:
    """Outcomes after an agent turns from ``good`` to ``bad`` accuracy until its trust is at or below the threshold."""
    rng = np.random.default_rng(seed)
    history = [agent_outcome(good, rng) for _ in range(before)]
    for step in range(1, after + 1):
        history.append(agent_outcome(bad, rng))
        if compute_trust("agent", history, config).trust <= config.threshold:
            return step
    return None


# ---- patterns ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlantedWorld:
    """Recommendations whose success follows planted rules, and the patterns that are truly there."""

    records: list[RecordView]
    planted: set[tuple[str, str]]  # (pattern kind, key): key is the agent, 'type/action' or ''


SUCCESS_ACTIONS = [("ops", "restart"), ("pricing", "discount")]
FAILURE_ACTIONS = [("ops", "scale_down"), ("pricing", "raise")]
NEUTRAL_ACTIONS = [("ops", "rollback"), ("ops", "page_oncall"), ("pricing", "bundle"), ("pricing", "hold")]
EXPERTS = ["expert_a", "expert_b"]
REGULARS = ["agent_c", "agent_d", "agent_e", "agent_f"]


def planted_world(n_subjects: int, seed: int = 0) -> PlantedWorld:
    """Each subject gets recommendations from 2-4 agents; success is drawn by the first rule that applies:

    consensus (>= 3 agents agree on the action): 0.9; a success action: 0.9; a failure action: 0.1;
    stated confidence >= 0.8 (stated only by experts, 30% of the time): 0.9; an expert: 0.85; else 0.5.
    Experts never pick failure actions.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, str, float]] = []
    all_actions = SUCCESS_ACTIONS + FAILURE_ACTIONS + NEUTRAL_ACTIONS
    for subject_index in range(n_subjects):
        subject = f"s{subject_index}"
        agents = rng.choice(EXPERTS + REGULARS, size=int(rng.integers(2, 5)), replace=False)
        herd = all_actions[int(rng.integers(len(all_actions)))] if rng.random() < 0.25 else None
        for agent in map(str, agents):
            expert = agent in EXPERTS
            pool = SUCCESS_ACTIONS + NEUTRAL_ACTIONS if expert else all_actions
            kind, action = herd if herd is not None and herd in pool else pool[int(rng.integers(len(pool)))]
            confidence = (
                float(rng.uniform(0.8, 0.95)) if expert and rng.random() < 0.3 else float(rng.uniform(0.3, 0.79))
            )
            rows.append((agent, subject, kind, action, confidence))
    counts = agreeing_agents((a, s, act) for a, s, _, act, _ in rows)
    records = []
    for agent, subject, kind, action, confidence in rows:
        agreeing = counts[(subject, action)]
        if agreeing >= 3:
            p = 0.9
        elif (kind, action) in SUCCESS_ACTIONS:
            p = 0.9
        elif (kind, action) in FAILURE_ACTIONS:
            p = 0.1
        elif confidence >= 0.8:
            p = 0.9
        elif agent in EXPERTS:
            p = 0.85
        else:
            p = 0.5
        records.append(RecordView(agent, kind, action, confidence, agreeing, bool(rng.random() < p)))
    planted = (
        {("consensus", ""), ("high_confidence", "")}
        | {("expert_opinion", e) for e in EXPERTS}
        | {("success_indicator", f"{k}/{a}") for k, a in SUCCESS_ACTIONS}
        | {("failure_avoidance", f"{k}/{a}") for k, a in FAILURE_ACTIONS}
    )
    return PlantedWorld(records, planted)


def pattern_key(kind: str, condition: dict[str, Any]) -> tuple[str, str]:
    if kind == "expert_opinion":
        return kind, condition["agent"]
    if kind in ("success_indicator", "failure_avoidance"):
        return kind, f"{condition['type']}/{condition['action']}"
    return kind, ""
