"""Experiment engine: A/B and multivariate tests over named variants, analysed after every outcome.

The first variant is the control; every other variant is compared with it by the always-valid mSPRT of
:mod:`metalab.services.sequential` at level alpha / (k - 1) (Bonferroni over the k - 1 comparisons).
Allocation policies live in :mod:`metalab.services.bandits`; per-variant intervals come from scipy
(Wilson score interval for binary outcomes, Student t for continuous ones); probability to be best is a
Monte Carlo over the same posteriors Thompson sampling draws from.

``analyse_arms`` and ``decide`` are pure functions of the arms' running sums, so the simulations in
``experiments/services`` and this service share one decision rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from metalab.services import sequential
from metalab.services.bandits import policy_for
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.store.models import Experiment, ExperimentOutcome, Variant

OutcomeType = Literal["binary", "continuous"]
Allocation = Literal["equal", "thompson", "ucb"]
PROBABILITY_DRAWS = 20_000


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    variants: list[str]
    outcome_type: OutcomeType = "binary"
    allocation: Allocation = "equal"
    maximize: bool = True
    alpha: float = 0.05
    # Standard deviation of the mSPRT's mixing prior on the effect, in units of the outcome's standard
    # deviation (Johari et al. 2017 tune it to the effects one expects; 0.1 SD is a small effect).
    mixture_scale: float = 0.1
    min_samples_per_variant: int = 100
    max_outcomes: int | None = None
    auto_complete: bool = True


@dataclass(frozen=True)
class Arms:
    """Running sums of every variant (control first) in outcome units, larger = better already applied."""

    names: list[str]
    count: np.ndarray
    total: np.ndarray
    total_squares: np.ndarray


@dataclass
class Comparison:
    variant: str
    difference: float  # mean(variant) - mean(control), in the outcome's units
    interval: tuple[float, float]  # always-valid (1 - alpha/(k-1)) confidence sequence at this look
    p_value_now: float
    p_value: float  # always valid: the minimum over all looks so far
    significant: bool


@dataclass
class VariantEstimate:
    name: str
    count: int
    mean: float | None
    interval: tuple[float, float] | None  # 95%, fixed-sample (Wilson / Student t)
    probability_best: float


@dataclass
class Decision:
    decision: Literal["continue", "winner", "control_wins", "inconclusive", "manual"]
    winner: str | None
    reason: str


@dataclass
class Analysis:
    outcomes: int
    estimates: list[VariantEstimate]
    comparisons: list[Comparison]
    decision: Decision
    min_p_values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def arms_from_variants(variants: list[Variant]) -> Arms:
    return Arms(names=[v.name for v in variants], count=np.array([v.count for v in variants], dtype=float),
                total=np.array([v.total for v in variants], dtype=float),
                total_squares=np.array([v.total_squares for v in variants], dtype=float))


def look_p_values(count: np.ndarray, total: np.ndarray, total_squares: np.ndarray, binary: bool, mixture_scale: float,
                  min_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One look at every treatment against the control (arms on the last axis, any batch axes in front).

    Returns the difference from the control, its variance, tau^2 and the p-value at this look (1 until
    both arms have ``min_samples`` outcomes); arrays over the treatments.
    """
    var = sequential.plugin_variance(count, total, total_squares, binary)
    mean = total / np.maximum(count, 1.0)
    difference = mean[..., 1:] - mean[..., :1]
    variance = sequential.difference_variance(count[..., :1], var[..., :1], count[..., 1:], var[..., 1:])
    tau2 = sequential.mixture_tau2(var[..., :1], var[..., 1:], mixture_scale)
    ready = (count[..., 1:] >= min_samples) & (count[..., :1] >= min_samples)
    p_now = np.where(ready, sequential.p_value_at_look(difference, variance, tau2), 1.0)
    return difference, variance, tau2, p_now


def analyse_arms(arms: Arms, spec: ExperimentSpec, previous_min_p: dict[str, float]) -> Analysis:
    """Estimates, comparisons with the control, and the decision, from the arms' running sums."""
    binary = spec.outcome_type == "binary"
    sign = 1.0  # the arms are already oriented so that larger is better
    level = spec.alpha / max(len(arms.names) - 1, 1)
    difference, variance, tau2, p_now = look_p_values(arms.count, arms.total, arms.total_squares, binary,
                                                      spec.mixture_scale, spec.min_samples_per_variant)
    radius = sequential.confidence_sequence_radius(variance, tau2, level)
    comparisons, min_p = [], {}
    for index, name in enumerate(arms.names[1:]):
        p = float(min(previous_min_p.get(name, 1.0), p_now[index]))
        min_p[name] = p
        comparisons.append(Comparison(variant=name, difference=float(difference[index]),
                                      interval=(float(difference[index] - radius[index]), float(difference[index] + radius[index])),
                                      p_value_now=float(p_now[index]), p_value=p, significant=p <= level))
    estimates = _estimates(arms, binary, sign)
    decision = decide(arms, comparisons, spec, level, sign)
    return Analysis(outcomes=int(arms.count.sum()), estimates=estimates, comparisons=comparisons,
                    decision=decision, min_p_values=min_p)


def decide(arms: Arms, comparisons: list[Comparison], spec: ExperimentSpec, level: float, sign: float) -> Decision:
    """Winner when a treatment beats the control; the control when every treatment loses to it."""
    control = arms.names[0]
    better = [c for c in comparisons if c.significant and sign * c.difference > 0]
    worse = [c for c in comparisons if c.significant and sign * c.difference < 0]
    if better:
        best = max(better, key=lambda c: sign * c.difference)
        return Decision("winner", best.variant,
                        f"'{best.variant}' beats the control '{control}' (improvement {best.difference:+.4g}, "
                        f"always-valid p = {best.p_value:.3g} <= {level:.3g}, confidence sequence "
                        f"[{best.interval[0]:.4g}, {best.interval[1]:.4g}]) after {int(arms.count.sum())} outcomes")
    if comparisons and len(worse) == len(comparisons):
        return Decision("control_wins", control,
                        f"every variant is worse than the control '{control}' (largest always-valid p = "
                        f"{max(c.p_value for c in worse):.3g} <= {level:.3g}) after {int(arms.count.sum())} outcomes")
    total = int(arms.count.sum())
    if spec.max_outcomes is not None and total >= spec.max_outcomes:
        return Decision("inconclusive", None,
                        f"reached max_outcomes={spec.max_outcomes} with no variant significantly different from "
                        f"the control at {level:.3g}; keep the control '{control}'")
    waiting = spec.min_samples_per_variant - int(arms.count.min())
    if waiting > 0:
        return Decision("continue", None, f"waiting for min_samples_per_variant={spec.min_samples_per_variant} "
                                          f"outcomes per variant (the smallest variant needs {waiting} more)")
    return Decision("continue", None, f"no variant differs from the control at always-valid level {level:.3g} yet")


def _estimates(arms: Arms, binary: bool, sign: float) -> list[VariantEstimate]:
    rng = np.random.default_rng(0)  # fixed: the same data always give the same probability to be best
    count, total = arms.count, arms.total
    var = sequential.plugin_variance(count, total, arms.total_squares, binary)
    if binary:
        draws = rng.beta(1.0 + total, 1.0 + count - total, size=(PROBABILITY_DRAWS, len(count)))
    else:
        mean = total / np.maximum(count, 1.0)
        scale = np.where(count > 1, np.sqrt(var / np.maximum(count, 1.0)), 1e6)
        draws = rng.normal(mean, scale, size=(PROBABILITY_DRAWS, len(count)))
    best = np.bincount(np.argmax(sign * draws, axis=1), minlength=len(count)) / PROBABILITY_DRAWS
    estimates = []
    for i, name in enumerate(arms.names):
        n = int(count[i])
        mean = float(total[i] / n) if n else None
        interval = None
        if binary and n:
            ci = stats.binomtest(int(round(total[i])), n).proportion_ci(0.95, method="wilson")
            interval = (float(ci.low), float(ci.high))
        elif n > 1:
            low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=float(np.sqrt(var[i] / n)))
            interval = (float(low), float(high))
        estimates.append(VariantEstimate(name, n, mean, interval, float(best[i])))
    return estimates


def spec_of(experiment: Experiment) -> ExperimentSpec:
    return ExperimentSpec(name=experiment.name, variants=[v.name for v in experiment.variants],
                          outcome_type=experiment.outcome_type, allocation=experiment.allocation,
                          maximize=experiment.maximize, alpha=experiment.alpha, mixture_scale=experiment.mixture_scale,
                          min_samples_per_variant=experiment.min_samples_per_variant,
                          max_outcomes=experiment.max_outcomes, auto_complete=experiment.auto_complete)


class ExperimentService:
    """Experiments of one workspace, on one session (the caller commits)."""

    def __init__(self, session: Session, workspace: str):
        self.session = session
        self.workspace = workspace

    def create(self, spec: ExperimentSpec) -> Experiment:
        if len(spec.variants) < 2:
            raise Unprocessable("an experiment needs at least two variants (the first is the control)")
        if len(set(spec.variants)) != len(spec.variants):
            raise Unprocessable("variant names must be distinct")
        existing = self.session.scalar(select(Experiment.id).where(Experiment.workspace == self.workspace,
                                                                   Experiment.name == spec.name))
        if existing is not None:
            raise Conflict(f"an experiment named {spec.name!r} already exists (id {existing})")
        experiment = Experiment(workspace=self.workspace, name=spec.name, outcome_type=spec.outcome_type,
                                allocation=spec.allocation, maximize=spec.maximize, alpha=spec.alpha,
                                mixture_scale=spec.mixture_scale, min_samples_per_variant=spec.min_samples_per_variant,
                                max_outcomes=spec.max_outcomes, auto_complete=spec.auto_complete, status="running",
                                min_p_values={}, variants=[Variant(position=i, name=n) for i, n in enumerate(spec.variants)])
        self.session.add(experiment)
        try:
            self.session.flush()
        except IntegrityError:  # created concurrently under the same name
            self.session.rollback()
            raise Conflict(f"an experiment named {spec.name!r} already exists") from None
        return experiment

    def get(self, experiment_id: int, lock: bool = False) -> Experiment:
        query = (select(Experiment).where(Experiment.id == experiment_id, Experiment.workspace == self.workspace)
                 .options(selectinload(Experiment.variants)))
        if lock:
            query = query.with_for_update()
        experiment = self.session.scalar(query)
        if experiment is None:
            raise NotFound(f"experiment {experiment_id} not found in workspace {self.workspace!r}")
        return experiment

    def list(self, limit: int, after_id: int = 0) -> list[Experiment]:
        return list(self.session.scalars(
            select(Experiment).where(Experiment.workspace == self.workspace, Experiment.id > after_id)
            .options(selectinload(Experiment.variants)).order_by(Experiment.id).limit(limit)))

    def assign(self, experiment_id: int, rng: np.random.Generator | None = None) -> tuple[Experiment, str]:
        """The variant the next unit should get; a completed experiment always answers its winner."""
        experiment = self.get(experiment_id)
        if experiment.status != "running":
            return experiment, experiment.winner or experiment.variants[0].name
        arms = self._oriented_arms(experiment)
        index = policy_for(experiment.allocation).choose(arms.count, arms.total, arms.total_squares,
                                                         experiment.outcome_type == "binary", rng or np.random.default_rng())
        return experiment, arms.names[int(index)]

    def record_outcome(self, experiment_id: int, variant_name: str, value: float, unit: str | None = None) -> ExperimentOutcome:
        """Store one outcome, update the running sums and the always-valid p-values, maybe complete."""
        experiment = self.get(experiment_id, lock=True)
        if experiment.status != "running":
            raise Conflict(f"experiment {experiment_id} is {experiment.status} (winner {experiment.winner!r}); "
                           "it takes no more outcomes")
        if experiment.outcome_type == "binary" and value not in (0, 1):
            raise Unprocessable(f"experiment {experiment_id} has binary outcomes: value must be 0 or 1, got {value}")
        variant = next((v for v in experiment.variants if v.name == variant_name), None)
        if variant is None:
            raise Unprocessable(f"unknown variant {variant_name!r}; the variants are "
                                + ", ".join(repr(v.name) for v in experiment.variants))
        variant.count += 1
        variant.total += float(value)
        variant.total_squares += float(value) * float(value)
        outcome = ExperimentOutcome(workspace=self.workspace, experiment_id=experiment.id, variant_id=variant.id,
                                    value=float(value), unit=unit)
        self.session.add(outcome)
        analysis = analyse_arms(self._oriented_arms(experiment), spec_of(experiment), experiment.min_p_values)
        experiment.min_p_values = analysis.min_p_values
        if experiment.auto_complete and analysis.decision.decision != "continue":
            self._complete(experiment, analysis.decision)
        self.session.flush()
        return outcome

    def analyse(self, experiment_id: int) -> tuple[Experiment, Analysis]:
        experiment = self.get(experiment_id)
        analysis = analyse_arms(self._oriented_arms(experiment), spec_of(experiment), experiment.min_p_values)
        self._report_in_outcome_units(experiment, analysis)
        if experiment.status == "completed":
            analysis.decision = Decision(experiment.decision or "manual", experiment.winner, experiment.reason or "")
        return experiment, analysis

    def complete(self, experiment_id: int, winner: str | None, reason: str | None) -> Experiment:
        experiment = self.get(experiment_id, lock=True)
        if experiment.status != "running":
            raise Conflict(f"experiment {experiment_id} is already {experiment.status}")
        if winner is not None and winner not in [v.name for v in experiment.variants]:
            raise Unprocessable(f"unknown winner {winner!r}; the variants are "
                                + ", ".join(repr(v.name) for v in experiment.variants))
        self._complete(experiment, Decision("manual", winner, reason or "completed by request"))
        self.session.flush()
        return experiment

    def auto_complete_running(self) -> int:
        """Complete every running experiment whose analysis is final (the learning-cycle job); returns how many."""
        completed = 0
        running = self.session.scalars(select(Experiment.id).where(Experiment.workspace == self.workspace,
                                                                   Experiment.status == "running")).all()
        for experiment_id in running:
            experiment = self.get(experiment_id, lock=True)
            analysis = analyse_arms(self._oriented_arms(experiment), spec_of(experiment), experiment.min_p_values)
            if experiment.auto_complete and analysis.decision.decision != "continue":
                self._complete(experiment, analysis.decision)
                completed += 1
        self.session.flush()
        return completed

    @staticmethod
    def _complete(experiment: Experiment, decision: Decision) -> None:
        experiment.status = "completed"
        experiment.winner = decision.winner
        experiment.decision = decision.decision
        experiment.reason = decision.reason
        experiment.completed_at = datetime.now(timezone.utc)

    @staticmethod
    def _oriented_arms(experiment: Experiment) -> Arms:
        """Running sums with larger = better (a minimised metric is negated; binary is flipped to 1 - x)."""
        arms = arms_from_variants(experiment.variants)
        if experiment.maximize:
            return arms
        if experiment.outcome_type == "binary":
            return Arms(arms.names, arms.count, arms.count - arms.total, arms.count - 2 * arms.total + arms.total_squares)
        return Arms(arms.names, arms.count, -arms.total, arms.total_squares)

    @staticmethod
    def _report_in_outcome_units(experiment: Experiment, analysis: Analysis) -> None:
        """Turn estimates of a minimised metric back into the metric's own units."""
        if experiment.maximize:
            return
        for estimate in analysis.estimates:
            if estimate.mean is None:
                continue
            if experiment.outcome_type == "binary":
                estimate.mean = 1.0 - estimate.mean
                estimate.interval = estimate.interval and (1.0 - estimate.interval[1], 1.0 - estimate.interval[0])
            else:
                estimate.mean = -estimate.mean
                estimate.interval = estimate.interval and (-estimate.interval[1], -estimate.interval[0])
        for comparison in analysis.comparisons:
            comparison.difference = -comparison.difference
            comparison.interval = (-comparison.interval[1], -comparison.interval[0])
