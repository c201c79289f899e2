"""Experiment engine: A/B, multivariate and bandit-allocated experiments over named variants.

Writes are appends. Recording an outcome reads the experiment's state and inserts one row, with no lock. The
outcomes' looks are taken afterwards in the order of their ids (:func:`catch_up`, under the experiment's row
lock, by the look worker of :mod:`metalab.services.looks` and by every write that changes the experiment): the
running sums, the always-valid state of every look (an O(pairs) closed form: the running minimum of the mSPRT
p-values) and, when a look decides, the completion -- for a whole batch of outcomes in one vectorised pass
(:func:`advance`) that equals analysing each outcome on its own. Reads apply the pending looks to what they
load, so they are exact at any time. Estimates, probabilities to be best and intervals are computed when the
analysis is read.

Two decision rules, one per kind of allocation; both are vectorised over leading batch axes and used as they
are by the simulations (experiments/services/simulate.py):

- ``equal`` allocation (a classic A/B test): every variant against the first (the control) by the always-valid
mSPRT of :mod:`metalab.services.sequential` at level alpha / (k - 1) (Bonferroni over the k - 1 comparisons);
a winner when a variant beats the control, the control when every variant loses. - adaptive allocation
(``thompson``, ``ucb``): these policies stop pulling poor arms, the control included, so comparisons with the
control alone never end (issue 38). Every pair of arms is compared by the same mSPRT (running minimum of each
pair's p-value), and an arm wins when it significantly beats every other arm at alpha / (k - 1): a best-arm
stopping rule in the spirit of successive elimination (Even-Dar, Mannor and Mansour, JMLR 7, 2006), with
always-valid pairwise tests in place of fixed-time bounds, i.e. always-valid comparisons of each arm with the
current best. A wrong best arm needs a false rejection in one of the k - 1 pairs that contain the true best,
so P(wrong winner) <= alpha (Bonferroni); the analysis reports each arm against the current best. With a plug-
in variance, and under adaptive allocation (which makes the arms' counts data-dependent), the guarantee is
asymptotic; the engine waits for ``min_samples_per_variant`` outcomes per arm, and
experiments/services/adaptive_decisions.py measures wrong decisions and A/A false decisions under Thompson
sampling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from sqlalchemy import JSON, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from metalab.services import sequential
from metalab.services.bandits import policy_for
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.estimates import probability_best, t_interval, wilson_interval
from metalab.services.fields import MAX_ID, STRICT_BODY, Name, ShortName
from metalab.services.store.models import Experiment, ExperimentOutcome, Variant, utcnow

OutcomeType = Literal["binary", "continuous"]
Allocation = Literal["equal", "thompson", "ucb"]
CONTINUE, WINNER, CONTROL_WINS = 0, 1, 2  # verdict codes of the vectorised rules


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment as it is asked for; with its limits, it is the API's request body as it stands."""

    __pydantic_config__ = STRICT_BODY
    name: Name
    variants: Annotated[
        list[ShortName],
        Field(
            min_length=2,
            max_length=20,
            description="the first is the control; distinct",
            json_schema_extra={"uniqueItems": True},
        ),
    ]
    outcome_type: OutcomeType = "binary"
    allocation: Allocation = "equal"
    maximize: bool = True
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    # Standard deviation of the mSPRT's mixing prior on the effect, in units of the outcome's standard
    # deviation (Johari et al. 2017 tune it to the effects one expects; 0.1 SD is a small effect). Far below
    # 1e-3 the test has no power, and its square underflows.
    mixture_scale: Annotated[float, Field(ge=1e-3, le=100.0)] = 0.1
    min_samples_per_variant: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    max_outcomes: Annotated[int | None, Field(ge=2, le=MAX_ID)] = None
    auto_complete: bool = True

    @property
    def adaptive(self) -> bool:
        return self.allocation != "equal"


@dataclass(frozen=True)
class Arms:
    """Running sums of every variant (control first) in outcome units, larger = better already applied."""

    names: list[str]
    count: np.ndarray
    total: np.ndarray
    total_squares: np.ndarray


def _about(text: str) -> Any:
    """A field's description in the API's schema (the dataclasses below are answered as they are)."""
    return Field(description=text)


@dataclass
class Comparison:
    variant: str
    difference: Annotated[float, _about("mean(variant) - mean(reference), in the outcome's units")]
    interval: Annotated[tuple[float, float], _about("always-valid confidence sequence at level alpha/(k-1)")]
    p_value_now: Annotated[float, _about("mSPRT p-value at this look")]
    p_value: Annotated[float, _about("always-valid p-value (mSPRT, running minimum over all looks)")]
    significant: bool
    reference: Annotated[str, _about("the control (equal allocation) or the current best arm (thompson, ucb)")] = ""


@dataclass
class VariantEstimate:
    name: str
    count: int
    mean: float | None
    interval: Annotated[tuple[float, float] | None, _about("95% interval of the mean (Wilson or Student t)")]
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


@dataclass(frozen=True)
class RecordedOutcome:
    id: int
    variant: str
    value: float
    unit: str | None
    created_at: datetime
    experiment_status: str
    winner: str | None


# ---- the decision rules (pure, vectorised: arms on the last axis) -------------------------------------------
def look_p_values(
    count: NDArray, total: NDArray, total_squares: NDArray, binary: bool, mixture_scale: float, min_samples: int
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """One look at every treatment against the control (arms on the last axis, any batch axes in front).

    Returns the difference from the control, its variance, tau^2 and the p-value at this look (1 until
    both arms have ``min_samples`` outcomes); arrays over the treatments.
    """
    k = np.shape(count)[-1]
    return pair_p_values(
        count, total, total_squares, binary, mixture_scale, min_samples, np.zeros(k - 1, dtype=int), np.arange(1, k)
    )


def pair_p_values(
    count: NDArray,
    total: NDArray,
    total_squares: NDArray,
    binary: bool,
    mixture_scale: float,
    min_samples: int,
    first: NDArray,
    second: NDArray,
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """The mSPRT look of every pair (mean[second] - mean[first]); arms on the last axis, pairs on the result's."""
    var = sequential.plugin_variance(count, total, total_squares, binary)
    mean = total / np.maximum(count, 1.0)
    difference = mean[..., second] - mean[..., first]
    variance = sequential.difference_variance(count[..., first], var[..., first], count[..., second], var[..., second])
    tau2 = sequential.mixture_tau2(var[..., first], var[..., second], mixture_scale)
    ready = (count[..., first] >= min_samples) & (count[..., second] >= min_samples)
    p_now = np.where(ready, sequential.p_value_at_look(difference, variance, tau2), 1.0)
    return difference, variance, tau2, p_now


def all_pairs(k: int) -> tuple[NDArray, NDArray]:
    return np.triu_indices(k, 1)


def control_verdict(difference: NDArray, min_p: NDArray, level: float) -> tuple[NDArray, NDArray]:
    """mSPRT rule: (code, arm index) -- a winner beats the control; the control wins when all variants lose."""
    significant = min_p <= level
    better, worse = significant & (difference > 0), significant & (difference < 0)
    best = 1 + np.argmax(np.where(better, difference, -np.inf), axis=-1)
    code = np.where(better.any(axis=-1), WINNER, np.where(worse.all(axis=-1), CONTROL_WINS, CONTINUE))
    return code, np.where(code == WINNER, best, 0)


def best_arm_verdict(difference: NDArray, min_p: NDArray, level: float, k: int) -> tuple[NDArray, NDArray]:
    """Adaptive rule: (code, arm index) -- an arm wins when it significantly beats every other arm.

    ``difference`` and ``min_p`` are over :func:`all_pairs` (mean[j] - mean[i] for i < j).
    """
    first, second = all_pairs(k)
    significant = min_p <= level
    beats = np.zeros(difference.shape[:-1] + (k, k), dtype=bool)  # beats[..., i, j]: i significantly above j
    beats[..., first, second] = significant & (difference < 0)
    beats[..., second, first] = significant & (difference > 0)
    wins = beats.sum(axis=-1) == k - 1
    index = np.argmax(wins, axis=-1)
    code = np.where(wins.any(axis=-1), np.where(index == 0, CONTROL_WINS, WINNER), CONTINUE)
    return code, index


def level_of(alpha: float, arms: int) -> float:
    """Bonferroni over the k - 1 comparisons with the control, or (adaptive) with the best arm."""
    return alpha / max(arms - 1, 1)


def rule_pairs(k: int, adaptive: bool) -> tuple[NDArray, NDArray]:
    """The pairs a rule looks at: (control, each variant), or (adaptive) every pair of arms."""
    return all_pairs(k) if adaptive else (np.zeros(k - 1, dtype=int), np.arange(1, k))


def verdict(difference: NDArray, min_p: NDArray, alpha: float, k: int, adaptive: bool) -> tuple[NDArray, NDArray]:
    """The engine's one decision rule over :func:`rule_pairs` at the Bonferroni level: (code, arm index)."""
    level = level_of(alpha, k)
    if adaptive:
        return best_arm_verdict(difference, min_p, level, k)
    return control_verdict(difference, min_p, level)


# ---- one experiment's state at a look --------------------------------------------------------------------
@dataclass
class Look:
    """The always-valid state after the latest outcome over its pairs: what is stored and what decides."""

    first: NDArray  # pair (first[p], second[p]): the control and each variant, or (adaptive) every pair
    second: NDArray
    difference: NDArray  # mean[second] - mean[first]
    radius: NDArray  # confidence sequence half-width at the level
    p_now: NDArray
    min_p: NDArray  # running minimum over all looks


def _pair_keys(names: list[str], look_first: NDArray, look_second: NDArray, adaptive: bool) -> list[tuple[str, ...]]:
    if not adaptive:
        return [(names[j],) for j in look_second]
    return [(names[i], names[j]) for i, j in zip(look_first, look_second)]


def stored_min_p(stored: dict[str, Any], keys: list[tuple[str, ...]]) -> NDArray:
    """Running minima from the JSON column: {variant: p} against the control, or {arm: {other arm: p}}."""
    values = []
    for key in keys:
        value = stored.get(key[0], 1.0)
        values.append(value.get(key[1], 1.0) if len(key) == 2 and isinstance(value, dict) else value)
    return np.array(values, dtype=float)


def min_p_json(keys: list[tuple[str, ...]], min_p: NDArray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in zip(keys, min_p):
        if len(key) == 1:
            out[key[0]] = float(p)
        else:
            out.setdefault(key[0], {})[key[1]] = float(p)
    return out


def take_look(arms: Arms, spec: ExperimentSpec, stored: dict[str, Any]) -> tuple[Look, dict[str, Any]]:
    """This look's p-values, radii and running minima; and the running minima as they are stored."""
    k = len(arms.names)
    first, second = rule_pairs(k, spec.adaptive)
    difference, variance, tau2, p_now = pair_p_values(
        arms.count,
        arms.total,
        arms.total_squares,
        spec.outcome_type == "binary",
        spec.mixture_scale,
        spec.min_samples_per_variant,
        first,
        second,
    )
    keys = _pair_keys(arms.names, first, second, spec.adaptive)
    min_p = np.minimum(stored_min_p(stored, keys), p_now)
    radius = sequential.confidence_sequence_radius(variance, tau2, level_of(spec.alpha, k))
    return Look(first, second, difference, radius, p_now, min_p), min_p_json(keys, min_p)


def decide(arms: Arms, look: Look, spec: ExperimentSpec) -> Decision:
    """The decision at this look, with the reason in words."""
    level, control, total = level_of(spec.alpha, len(arms.names)), arms.names[0], int(arms.count.sum())
    code, index = verdict(look.difference, look.min_p, spec.alpha, len(arms.names), spec.adaptive)
    if code == WINNER and not spec.adaptive:
        i = int(index) - 1
        interval = (look.difference[i] - look.radius[i], look.difference[i] + look.radius[i])
        return Decision(
            "winner",
            arms.names[i + 1],
            f"'{arms.names[i + 1]}' beats the control '{control}' (improvement {look.difference[i]:+.4g}, "
            f"always-valid p = {look.min_p[i]:.3g} <= {level:.3g}, confidence sequence "
            f"[{interval[0]:.4g}, {interval[1]:.4g}]) after {total} outcomes",
        )
    if code == CONTROL_WINS and not spec.adaptive:
        return Decision(
            "control_wins",
            control,
            f"every variant is worse than the control '{control}' (largest always-valid p = "
            f"{float(look.min_p.max()):.3g} <= {level:.3g}) after {total} outcomes",
        )
    if code != CONTINUE:
        best = int(index)
        involved = (look.first == best) | (look.second == best)
        return Decision(
            "winner" if code == WINNER else "control_wins",
            arms.names[best],
            f"'{arms.names[best]}' beats every other arm (largest always-valid p against them = "
            f"{float(look.min_p[involved].max()):.3g} <= {level:.3g}) after {total} outcomes",
        )
    if spec.max_outcomes is not None and total >= spec.max_outcomes:
        which = (
            "no arm significantly better than all others"
            if spec.adaptive
            else "no variant significantly different from the control"
        )
        return Decision(
            "inconclusive",
            None,
            f"reached max_outcomes={spec.max_outcomes} with {which} at {level:.3g}; keep the control '{control}'",
        )
    waiting = spec.min_samples_per_variant - int(arms.count.min())
    if waiting > 0:
        return Decision(
            "continue",
            None,
            f"waiting for min_samples_per_variant={spec.min_samples_per_variant} "
            f"outcomes per variant (the smallest variant needs {waiting} more)",
        )
    if spec.adaptive:
        return Decision("continue", None, f"no arm beats every other arm at always-valid level {level:.3g} yet")
    return Decision("continue", None, f"no variant differs from the control at always-valid level {level:.3g} yet")


def comparisons_of(arms: Arms, look: Look, spec: ExperimentSpec) -> list[Comparison]:
    """mSPRT: every variant against the control; adaptive: every arm against the current best."""
    level = level_of(spec.alpha, len(arms.names))
    reference = int(np.argmax(arms.total / np.maximum(arms.count, 1.0))) if spec.adaptive else 0
    comparisons = []
    for p in range(len(look.first)):
        i, j = int(look.first[p]), int(look.second[p])
        if reference not in (i, j):
            continue
        sign, other = (1.0, j) if i == reference else (-1.0, i)  # difference = mean[other] - mean[reference]
        d, r = sign * look.difference[p], look.radius[p]
        comparisons.append(
            Comparison(
                variant=arms.names[other],
                difference=float(d),
                interval=(float(d - r), float(d + r)),
                p_value_now=float(look.p_now[p]),
                p_value=float(look.min_p[p]),
                significant=bool(look.min_p[p] <= level),
                reference=arms.names[reference],
            )
        )
    return comparisons


def estimates_of(arms: Arms, binary: bool) -> list[VariantEstimate]:
    count, total = arms.count, arms.total
    var = sequential.plugin_variance(count, total, arms.total_squares, binary)
    best = probability_best(count, total, var, binary)
    estimates = []
    for i, name in enumerate(arms.names):
        n = int(count[i])
        mean = float(total[i] / n) if n else None
        interval = None
        if binary and n:
            interval = wilson_interval(float(round(total[i])), n)
        elif not binary and n > 1:
            interval = t_interval(mean, float(var[i]), n)
        estimates.append(VariantEstimate(name, n, mean, interval, float(best[i])))
    return estimates


def analyse_arms(arms: Arms, spec: ExperimentSpec, look: Look) -> Analysis:
    """Estimates, comparisons and the decision of one look (what a read computes; never run per write)."""
    keys = _pair_keys(arms.names, look.first, look.second, spec.adaptive)
    return Analysis(
        outcomes=int(arms.count.sum()),
        estimates=estimates_of(arms, spec.outcome_type == "binary"),
        comparisons=comparisons_of(arms, look, spec),
        decision=decide(arms, look, spec),
        min_p_values=min_p_json(keys, look.min_p),
    )


def spec_of(experiment: Experiment) -> ExperimentSpec:
    return ExperimentSpec(
        name=experiment.name,
        variants=[v.name for v in experiment.variants],
        outcome_type=experiment.outcome_type,
        allocation=experiment.allocation,
        maximize=experiment.maximize,
        alpha=experiment.alpha,
        mixture_scale=experiment.mixture_scale,
        min_samples_per_variant=experiment.min_samples_per_variant,
        max_outcomes=experiment.max_outcomes,
        auto_complete=experiment.auto_complete,
    )


def oriented(names: list[str], count, total, total_squares, maximize: bool, binary: bool) -> Arms:
    """Running sums with larger = better (a minimised metric is negated; binary is flipped to 1 - x)."""
    count, total, squares = (np.asarray(x, dtype=float) for x in (count, total, total_squares))
    if maximize:
        return Arms(names, count, total, squares)
    if binary:
        return Arms(names, count, count - total, count - 2 * total + squares)
    return Arms(names, count, -total, squares)


# The write path's and the catch-up's statements, built once (building them per call cost more than executing them).
_E, _V, _O = Experiment.__table__, Variant.__table__, ExperimentOutcome.__table__
_SPEC_COLUMNS = (
    "name",
    "outcome_type",
    "allocation",
    "maximize",
    "alpha",
    "mixture_scale",
    "min_samples_per_variant",
    "max_outcomes",
    "auto_complete",
)
_TARGET = (  # the experiment's state and the named variant's id (None when no variant has that name)
    select(_E.c.status, _E.c.winner, _E.c.outcome_type, _V.c.id.label("variant_id"))
    .select_from(_E.outerjoin(_V, (_V.c.experiment_id == _E.c.id) & (_V.c.name == bindparam("vname"))))
    .where(_E.c.id == bindparam("eid"), _E.c.workspace == bindparam("ws"))
)
_LOCK = (
    select(_E.c.status, _E.c.min_p_values, *(_E.c[c] for c in _SPEC_COLUMNS))
    .where(_E.c.id == bindparam("eid"))
    .with_for_update()
)
_ARMS = (
    select(_V.c.id, _V.c.name, _V.c.count, _V.c.total, _V.c.total_squares)
    .where(_V.c.experiment_id == bindparam("eid"))
    .order_by(_V.c.position)
)
_PENDING = (
    select(_O.c.id, _O.c.variant_id, _O.c.value)
    .where(_O.c.experiment_id == bindparam("eid"), _O.c.look.is_(None))
    .order_by(_O.c.id)
)
_PENDING_EXPERIMENTS = select(_O.c.experiment_id).where(_O.c.look.is_(None)).distinct()
_ASSIGN = (
    select(
        _E.c.id,
        _E.c.status,
        _E.c.winner,
        _E.c.allocation,
        _E.c.outcome_type,
        _E.c.maximize,
        _V.c.name,
        _V.c.count,
        _V.c.total,
        _V.c.total_squares,
    )
    .join(_V, _V.c.experiment_id == _E.c.id)
    .where(_E.c.id == bindparam("eid"), _E.c.workspace == bindparam("ws"))
    .order_by(_V.c.position)
)
_APPEND = (  # the outcome, if the experiment is this workspace's, running, has the variant and takes the value
    _O.insert()
    .from_select(
        ["workspace", "experiment_id", "variant_id", "value", "unit", "created_at"],
        select(
            _E.c.workspace,
            _E.c.id,
            _V.c.id,
            bindparam("x", type_=_O.c.value.type),
            bindparam("unit", type_=_O.c.unit.type),
            bindparam("at", type_=_O.c.created_at.type),
        )
        .join(_V, _V.c.experiment_id == _E.c.id)
        .where(
            _E.c.id == bindparam("eid"),
            _E.c.workspace == bindparam("ws"),
            _E.c.status == "running",
            _V.c.name == bindparam("vname"),
            (_E.c.outcome_type != "binary") | bindparam("x").in_([0.0, 1.0]),
        ),
    )
    .returning(_O.c.id)
)
_SET_LOOK = _O.update().where(_O.c.id == bindparam("oid")).values(look=bindparam("look"))
_SET_SUMS = (
    _V.update()
    .where(_V.c.id == bindparam("vid"))
    .values(count=bindparam("n"), total=bindparam("x"), total_squares=bindparam("x2"))
)
_MIN_P = _E.update().where(_E.c.id == bindparam("eid")).values(min_p_values=bindparam("mp", type_=JSON))


@dataclass
class Advance:
    """What a batch of outcomes does to an experiment: the sums after it, the stored minima, maybe a decision."""

    count: NDArray
    total: NDArray
    total_squares: NDArray
    min_p_values: dict[str, Any]
    decision: Decision | None  # set when a look in the batch decided (auto-completion)


def advance(
    spec: ExperimentSpec,
    sums: tuple[NDArray, NDArray, NDArray],
    stored: dict[str, Any],
    arm: NDArray,
    value: NDArray,
    running: bool = True,
) -> Advance:
    """Take the looks after each of a batch of outcomes, in order, as if each had been analysed on its own.

    ``sums`` are the (count, total, total_squares) before the batch in outcome units, ``arm`` (n,) the arm index
    and ``value`` (n,) the outcome of each. The sums after every prefix are cumulative sums with the prior sums as
    their first row, so each is the same sequence of float additions as one outcome at a time; the p-values of
    all looks come from one vectorised call, their running minima from ``np.minimum.accumulate``. Looks stop at
    the first one that decides when the experiment completes itself (later outcomes only add to the sums), and
    are not taken at all when it is no longer ``running``.
    """
    n, k = len(value), len(spec.variants)
    onehot = np.zeros((n + 1, k))
    onehot[0] = sums[0]
    onehot[np.arange(1, n + 1), arm] = 1.0
    count = np.cumsum(onehot, axis=0)
    added = np.zeros((n + 1, k))
    added[0] = sums[1]
    added[np.arange(1, n + 1), arm] = value
    total = np.cumsum(added, axis=0)
    added[0] = sums[2]
    added[np.arange(1, n + 1), arm] = value * value
    squares = np.cumsum(added, axis=0)
    final = (count[-1], total[-1], squares[-1])
    if not running or n == 0:
        return Advance(*final, stored, None)
    binary = spec.outcome_type == "binary"
    arms = oriented(spec.variants, count[1:], total[1:], squares[1:], spec.maximize, binary)
    first, second = rule_pairs(k, spec.adaptive)
    keys = _pair_keys(spec.variants, first, second, spec.adaptive)
    difference, _, _, p_now = pair_p_values(
        arms.count, arms.total, arms.total_squares, binary, spec.mixture_scale, spec.min_samples_per_variant,
        first, second,
    )  # fmt: skip
    min_p = np.minimum.accumulate(np.vstack([stored_min_p(stored, keys), p_now]), axis=0)[1:]
    last = n - 1
    if spec.auto_complete:
        code, _ = verdict(difference, min_p, spec.alpha, k, spec.adaptive)
        decisive = code != CONTINUE
        if spec.max_outcomes is not None:
            decisive |= arms.count.sum(axis=-1) >= spec.max_outcomes
        if decisive.any():
            last = int(np.argmax(decisive))
            at = Arms(spec.variants, arms.count[last], arms.total[last], arms.total_squares[last])
            look = take_look(at, spec, min_p_json(keys, min_p[last]))[0]
            return Advance(*final, min_p_json(keys, min_p[last]), decide(at, look, spec))
    return Advance(*final, min_p_json(keys, min_p[last]), None)


def _advance_pending(spec: ExperimentSpec, variants: Any, stored: Any, status: str, pending: Any) -> Advance:
    """:func:`advance` over pending outcome rows, from variant rows (stored or loaded) in the spec's order."""
    position = {v.id: i for i, v in enumerate(variants)}
    sums = tuple(np.array([getattr(v, c) for v in variants], dtype=float) for c in ("count", "total", "total_squares"))
    return advance(
        spec,
        sums,
        stored or {},
        np.array([position[o.variant_id] for o in pending]),
        np.array([o.value for o in pending], dtype=float),
        running=status == "running",
    )


def catch_up(session: Session, experiment_id: int) -> int:
    """Take the looks of the outcomes recorded since the last catch-up, under the experiment's row lock.

    The running sums, the running minima and an auto-completion are written in the caller's transaction;
    each outcome gets its look number, so every outcome counts once even when two catch-ups race (the
    second waits for the lock, then finds nothing pending). Returns how many outcomes were taken.
    """
    connection = session.connection()
    state = connection.execute(_LOCK, {"eid": experiment_id}).first()
    pending = connection.execute(_PENDING, {"eid": experiment_id}).all() if state is not None else []
    if not pending:
        return 0
    rows = connection.execute(_ARMS, {"eid": experiment_id}).all()
    spec = ExperimentSpec(**{key: state._mapping[key] for key in _SPEC_COLUMNS}, variants=[r.name for r in rows])
    step = _advance_pending(spec, rows, state.min_p_values, state.status, pending)
    first_look = sum(r.count for r in rows)
    connection.execute(_SET_LOOK, [{"oid": o.id, "look": first_look + i} for i, o in enumerate(pending, 1)])
    connection.execute(
        _SET_SUMS,
        [
            {"vid": r.id, "n": int(step.count[i]), "x": float(step.total[i]), "x2": float(step.total_squares[i])}
            for i, r in enumerate(rows)
        ],
    )
    if state.status == "running":
        connection.execute(_MIN_P, {"eid": experiment_id, "mp": step.min_p_values})
    if step.decision is not None:
        completed = update(Experiment).where(Experiment.id == experiment_id).values(**_completion(step.decision))
        connection.execute(completed)
    return len(pending)


def _completion(decision: Decision) -> dict[str, Any]:
    """The experiment's columns when a decision completes it."""
    return {
        "status": "completed",
        "winner": decision.winner,
        "decision": decision.decision,
        "reason": decision.reason,
        "completed_at": utcnow(),
    }


def pending_experiments(session: Session) -> list[int]:
    """Experiments (of every workspace) with outcomes whose look is not taken yet."""
    return list(session.execute(_PENDING_EXPERIMENTS).scalars())


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
        existing = self.session.scalar(
            select(Experiment.id).where(Experiment.workspace == self.workspace, Experiment.name == spec.name)
        )
        if existing is not None:
            raise Conflict(f"an experiment named {spec.name!r} already exists (id {existing})")
        experiment = Experiment(
            workspace=self.workspace,
            name=spec.name,
            outcome_type=spec.outcome_type,
            allocation=spec.allocation,
            maximize=spec.maximize,
            alpha=spec.alpha,
            mixture_scale=spec.mixture_scale,
            min_samples_per_variant=spec.min_samples_per_variant,
            max_outcomes=spec.max_outcomes,
            auto_complete=spec.auto_complete,
            status="running",
            min_p_values={},
            variants=[Variant(position=i, name=n) for i, n in enumerate(spec.variants)],
        )
        self.session.add(experiment)
        try:
            self.session.flush()
        except IntegrityError:  # created concurrently under the same name
            self.session.rollback()
            raise Conflict(f"an experiment named {spec.name!r} already exists") from None
        return experiment

    def get(self, experiment_id: int, lock: bool = False) -> Experiment:
        """The experiment with its variants, its pending looks taken, so sums, minima and status are exact.

        With ``lock`` (a write that changes the experiment) the looks are taken and written in this transaction;
        otherwise (a read, maybe on a read-only session) they are applied to the loaded objects only.
        """
        if lock:
            catch_up(self.session, experiment_id)
        query = (
            select(Experiment)
            .where(Experiment.id == experiment_id, Experiment.workspace == self.workspace)
            .options(selectinload(Experiment.variants))
        )
        if lock:
            query = query.with_for_update()
        experiment = self.session.scalar(query)
        if experiment is None:
            raise NotFound(f"experiment {experiment_id} not found in workspace {self.workspace!r}")
        if not lock:
            self._take_pending_in_memory(experiment)
        return experiment

    def _take_pending_in_memory(self, experiment: Experiment) -> None:
        """What :func:`catch_up` would write, set on the loaded objects as their committed state (never flushed)."""
        pending = self.session.execute(_PENDING, {"eid": experiment.id}).all()
        if not pending:
            return
        variants = experiment.variants
        step = _advance_pending(spec_of(experiment), variants, experiment.min_p_values, experiment.status, pending)
        for i, v in enumerate(variants):
            set_committed_value(v, "count", int(step.count[i]))
            set_committed_value(v, "total", float(step.total[i]))
            set_committed_value(v, "total_squares", float(step.total_squares[i]))
        set_committed_value(experiment, "min_p_values", step.min_p_values)
        if step.decision is not None:
            for key, value in _completion(step.decision).items():
                set_committed_value(experiment, key, value)

    def list(self, limit: int, after_id: int = 0) -> list[Experiment]:
        return list(
            self.session.scalars(
                select(Experiment)
                .where(Experiment.workspace == self.workspace, Experiment.id > after_id)
                .options(selectinload(Experiment.variants))
                .order_by(Experiment.id)
                .limit(limit)
            )
        )

    def assign(self, experiment_id: int, rng: np.random.Generator | None = None) -> tuple[Experiment | Any, str]:
        """The variant the next unit should get (one query, O(arms)); a completed experiment answers its winner.

        The sums are those of the latest catch-up (at most the look worker's interval behind the outcomes).
        """
        rows = self.session.connection().execute(_ASSIGN, {"eid": experiment_id, "ws": self.workspace}).all()
        if not rows:
            raise NotFound(f"experiment {experiment_id} not found in workspace {self.workspace!r}")
        head = rows[0]
        if head.status != "running":
            return head, head.winner or head.name
        binary = head.outcome_type == "binary"
        arms = oriented(
            [r.name for r in rows],
            [r.count for r in rows],
            [r.total for r in rows],
            [r.total_squares for r in rows],
            head.maximize,
            binary,
        )
        index = policy_for(head.allocation).choose(
            arms.count, arms.total, arms.total_squares, binary, rng or np.random.default_rng()
        )
        return head, arms.names[int(index)]

    def record_outcome(
        self, experiment_id: int, variant_name: str, value: float, unit: str | None = None
    ) -> RecordedOutcome:
        """Append one outcome: one ``INSERT ... SELECT`` that inserts only into a running experiment, no lock.

        The outcome's look is taken later, in the order of the outcomes' ids, by :meth:`catch_up` (reads of the
        experiment and the service's look worker call it). The status in the answer is the experiment's as of
        its latest catch-up.
        """
        connection, created_at = self.session.connection(), utcnow()
        values = {"ws": self.workspace, "eid": experiment_id, "vname": variant_name, "x": float(value)}
        outcome_id = connection.execute(_APPEND, {**values, "unit": unit, "at": created_at}).scalar()
        if outcome_id is None:  # nothing inserted: say why
            self._refuse(connection, experiment_id, variant_name, value)
        return RecordedOutcome(outcome_id, variant_name, float(value), unit, created_at, "running", None)

    def _refuse(self, connection: Any, experiment_id: int, variant_name: str, value: float) -> None:
        """The error of an outcome the append did not insert (absent experiment or variant, completed, bad value)."""
        target = connection.execute(
            _TARGET, {"eid": experiment_id, "ws": self.workspace, "vname": variant_name}
        ).first()
        if target is None:
            raise NotFound(f"experiment {experiment_id} not found in workspace {self.workspace!r}")
        if target.status != "running":
            raise Conflict(
                f"experiment {experiment_id} is {target.status} (winner {target.winner!r}); it takes no more outcomes"
            )
        if target.variant_id is None:
            names = connection.execute(_ARMS, {"eid": experiment_id}).scalars(1).all()
            raise NotFound(f"unknown variant {variant_name!r}; the variants are " + ", ".join(map(repr, names)))
        raise Conflict(f"experiment {experiment_id} has binary outcomes: value must be 0 or 1, got {value}")

    def _look(self, experiment: Experiment) -> tuple[Arms, ExperimentSpec, Look]:
        spec = spec_of(experiment)
        variants = experiment.variants
        arms = oriented(
            [v.name for v in variants],
            [v.count for v in variants],
            [v.total for v in variants],
            [v.total_squares for v in variants],
            spec.maximize,
            spec.outcome_type == "binary",
        )
        return arms, spec, take_look(arms, spec, experiment.min_p_values or {})[0]

    def analyse(self, experiment_id: int) -> tuple[Experiment, Analysis]:
        experiment = self.get(experiment_id)
        analysis = analyse_arms(*self._look(experiment))
        self._report_in_outcome_units(experiment, analysis)
        if experiment.status == "completed":
            analysis.decision = Decision(experiment.decision or "manual", experiment.winner, experiment.reason or "")
        return experiment, analysis

    def complete(self, experiment_id: int, winner: str | None, reason: str | None) -> Experiment:
        experiment = self.get(experiment_id, lock=True)
        if experiment.status != "running":
            raise Conflict(f"experiment {experiment_id} is already {experiment.status}")
        if winner is not None and winner not in [v.name for v in experiment.variants]:
            raise NotFound(
                f"unknown winner {winner!r}; the variants are " + ", ".join(repr(v.name) for v in experiment.variants)
            )
        self._complete(experiment, Decision("manual", winner, reason or "completed by request"))
        self.session.flush()
        return experiment

    def auto_complete_running(self) -> int:
        """Complete every running experiment whose analysis is final (the learning-cycle job); returns how many."""
        completed = 0
        running = self.session.scalars(
            select(Experiment.id).where(Experiment.workspace == self.workspace, Experiment.status == "running")
        ).all()
        for experiment_id in running:
            experiment = self.get(experiment_id, lock=True)  # takes the pending looks, which may complete it
            if experiment.status != "running":
                completed += 1
                continue
            arms, spec, look = self._look(experiment)
            decision = decide(arms, look, spec)
            if experiment.auto_complete and decision.decision != "continue":
                self._complete(experiment, decision)
                completed += 1
        self.session.flush()
        return completed

    @staticmethod
    def _complete(experiment: Experiment, decision: Decision) -> None:
        for key, value in _completion(decision).items():
            setattr(experiment, key, value)

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
