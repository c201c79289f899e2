"""Hyperparameter governor: bounded knobs changed by agents, judged by a meta-reward, undone when it drops.

Knobs are floats, ints or booleans with bounds; every proposed value is clamped into them (ints rounded).
Telemetry gives a meta-reward ``w_gain * gain + w_stability * stability - w_resource * resource``. The
governor keeps an exponential moving average (EMA) of it and, with a slower rate ``variance_alpha`` and
only while no change is being judged, an exponentially weighted variance (the standard recursions, e.g.
Finch 2009, "Incremental calculation of weighted mean and variance").

- A change is allowed only when no cooldown is running; it starts ``cooldown`` updates of cooldown and
  an evaluation of ``evaluation_window`` updates, against the EMA at the time of the change.
- During the evaluation, if the EMA falls more than ``max(min_drop, drop_z * sd_EMA)`` below that
  reference (sd_EMA = the reward's sd at the change times sqrt(alpha / (2 - alpha)), the EMA's own noise),
  the knobs return to the last good snapshot and a longer ``rollback_cooldown`` starts.
- A change that survives its evaluation window becomes the good snapshot, and pulls its domain's prior
  toward it by one Reptile step.

Priors across domains: the per-domain priors (normalised to [0, 1] by the knobs' bounds) are combined by
the core's Reptile update (:func:`metalab.adapt.outer_update.reptile_update`) after dropping outlier
domains, those no other domain corroborates: a distance to the nearest other domain with a robust z-score
(median absolute deviation) above ``outlier_z`` and larger than ``min_outlier_distance`` (a lone domain
cannot be told from a bad record), and with diversity weights (a domain's weight is 1 / the number of domains
within ``radius`` of
it, so a cluster of near-identical domains counts about once). A new governor starts from its domain's
prior, else the combined prior, else each knob's default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metalab.adapt.outer_update import reptile_update
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.store.models import DomainPrior, Governor, GovernorEvent, utcnow

GLOBAL_PRIOR = "*"
KnobKind = Literal["float", "int", "bool"]


@dataclass(frozen=True)
class Knob:
    name: str
    kind: KnobKind = "float"
    low: float = 0.0
    high: float = 1.0
    default: float | int | bool | None = None

    def __post_init__(self) -> None:
        if self.kind == "bool":
            object.__setattr__(self, "low", 0.0)
            object.__setattr__(self, "high", 1.0)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise Unprocessable(f"knob {self.name!r}: bounds [{self.low}, {self.high}] must be finite with low <= high")

    def clamp(self, value: Any) -> float | int | bool:
        if self.kind == "bool":
            return bool(value)
        value = float(min(max(float(value), self.low), self.high))
        return int(round(value)) if self.kind == "int" else value

    def initial(self) -> float | int | bool:
        return self.clamp(self.default if self.default is not None else (self.low + self.high) / 2)

    def normalise(self, value: Any) -> float:
        return 0.0 if self.high == self.low else (float(value) - self.low) / (self.high - self.low)

    def denormalise(self, unit: float) -> float | int | bool:
        if self.kind == "bool":
            return bool(unit >= 0.5)
        return self.clamp(self.low + float(unit) * (self.high - self.low))


@dataclass(frozen=True)
class GovernorSettings:
    weights: dict[str, float] = field(default_factory=lambda: {"gain": 1.0, "stability": 0.5, "resource": 0.3})
    ema_alpha: float = 0.3
    cooldown: int = 5
    rollback_cooldown: int = 20
    evaluation_window: int = 10
    drop_z: float = 3.0
    min_drop: float = 0.05
    prior_step: float = 0.5
    variance_alpha: float = 0.05  # a slower average for the noise: with ema_alpha's ~6 rewards it read 0.16 for 0.1


@dataclass
class GovernorState:
    """Everything the governor decides from; plain data so it round-trips through the store as JSON."""

    knobs: list[Knob]
    settings: GovernorSettings
    values: dict[str, Any]
    good_values: dict[str, Any]
    ema: float | None = None
    slow_mean: float | None = None
    variance: float = 0.0
    reference_ema: float | None = None
    tolerance: float | None = None
    updates: int = 0
    cooldown_until: int = 0
    change_at: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GovernorState:
        data = dict(data)
        data["knobs"] = [Knob(**k) for k in data["knobs"]]
        data["settings"] = GovernorSettings(**data["settings"])
        return cls(**data)


def meta_reward(telemetry: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted gain plus stability minus the resource penalty (every weight non-negative)."""
    missing = [k for k in ("gain", "stability", "resource") if k not in telemetry]
    if missing:
        raise Unprocessable(f"telemetry needs gain, stability and resource (missing {', '.join(missing)})")
    return (
        weights.get("gain", 0.0) * telemetry["gain"]
        + weights.get("stability", 0.0) * telemetry["stability"]
        - weights.get("resource", 0.0) * telemetry["resource"]
    )


def propose(state: GovernorState, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Apply ``changes`` clamped into bounds; returns the new values and the knobs that had to be clamped."""
    knobs = {k.name: k for k in state.knobs}
    unknown = sorted(set(changes) - set(knobs))
    if unknown:
        raise Conflict(f"unknown knobs {', '.join(unknown)}; the knobs are {', '.join(knobs)}")
    if state.updates < state.cooldown_until:
        raise Conflict(f"cooling down: no change for {state.cooldown_until - state.updates} more telemetry updates")
    values = dict(state.values)
    clamped = []
    for name, value in changes.items():
        values[name] = knobs[name].clamp(value)
        if knobs[name].kind != "bool" and float(values[name]) != float(value):
            clamped.append(name)
    if values == state.values:
        return values, clamped
    if state.change_at is None:  # a fresh evaluation measures against the EMA and noise right now
        state.reference_ema = state.ema
        sd_ema = math.sqrt(state.variance * state.settings.ema_alpha / (2 - state.settings.ema_alpha))
        state.tolerance = max(state.settings.min_drop, state.settings.drop_z * sd_ema)
    state.values, state.change_at = values, state.updates
    state.cooldown_until = state.updates + state.settings.cooldown
    return values, clamped


def observe(state: GovernorState, reward: float) -> str:
    """Fold one reward into the EMA; returns ``rollback``, ``accepted`` or ``none``."""
    alpha, beta = state.settings.ema_alpha, state.settings.variance_alpha
    if state.ema is None:
        state.ema = state.slow_mean = reward
    else:
        state.ema += alpha * (reward - state.ema)
        if state.change_at is None:  # the noise is measured while nothing is being judged
            deviation = reward - state.slow_mean
            state.slow_mean += beta * deviation
            state.variance = (1 - beta) * (state.variance + beta * deviation * deviation)
    state.updates += 1
    if state.change_at is None:
        return "none"
    if state.reference_ema is not None and state.ema < state.reference_ema - state.tolerance:
        state.values = dict(state.good_values)
        state.change_at = None
        state.cooldown_until = state.updates + state.settings.rollback_cooldown
        return "rollback"
    if state.updates - state.change_at >= state.settings.evaluation_window:
        state.good_values = dict(state.values)
        state.change_at = None
        return "accepted"
    return "none"


@dataclass
class Combination:
    values: dict[str, Any]
    weights: dict[str, float]
    outliers: list[str]


def combine_priors(
    current: dict[str, Any] | None,
    priors: dict[str, dict[str, Any]],
    knobs: list[Knob],
    step_size: float = 1.0,
    outlier_z: float = 3.5,
    radius: float = 0.1,
    min_outlier_distance: float = 0.2,
) -> Combination:
    """One Reptile step of the cross-domain prior toward the diversity-weighted mean of the inlier domains."""
    if not priors:
        raise Conflict("no domain priors to combine yet")
    names = sorted(priors)
    matrix = np.array([[k.normalise(priors[d][k.name]) for k in knobs] for d in names])
    pairwise = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=-1)
    np.fill_diagonal(pairwise, np.inf)
    nearest = pairwise.min(axis=1) if len(names) > 1 else np.zeros(1)
    spread = 1.4826 * np.median(np.abs(nearest - np.median(nearest)))  # MAD scaled to a normal's sd
    outlier = (nearest - np.median(nearest) > outlier_z * spread) & (nearest > min_outlier_distance)
    kept = matrix[~outlier]
    close = np.linalg.norm(kept[:, None, :] - kept[None, :, :], axis=-1) <= radius
    weights = 1.0 / close.sum(axis=1)
    weights /= weights.sum()
    start = np.array([k.normalise(current[k.name]) for k in knobs]) if current is not None else kept.mean(axis=0)
    unit = reptile_update(start, kept, step_size, weights)
    kept_names = [d for d, o in zip(names, outlier) if not o]
    return Combination(
        {k.name: k.denormalise(u) for k, u in zip(knobs, unit)},
        {d: float(w) for d, w in zip(kept_names, weights)},
        [d for d, o in zip(names, outlier) if o],
    )


class GovernorService:
    def __init__(self, session: Session, workspace: str):
        self.session, self.workspace = session, workspace

    def _prior(self, domain: str) -> DomainPrior | None:
        return self.session.get(DomainPrior, (self.workspace, domain))

    def create(
        self,
        name: str,
        domain: str,
        knobs: list[Knob],
        settings: GovernorSettings,
        values: dict[str, Any] | None = None,
    ) -> Governor:
        if not knobs or len({k.name for k in knobs}) != len(knobs):
            raise Unprocessable("a governor needs at least one knob, with distinct names")
        start = {k.name: k.initial() for k in knobs}
        for source in (self._prior(GLOBAL_PRIOR), self._prior(domain)):
            if source is not None:
                start.update({k.name: k.clamp(source.values[k.name]) for k in knobs if k.name in source.values})
        state = GovernorState(knobs, settings, start, dict(start))
        if values:
            propose(state, values)
            state.change_at, state.cooldown_until, state.good_values = None, 0, dict(state.values)
        governor = Governor(workspace=self.workspace, name=name, domain=domain, state=state.as_dict())
        self.session.add(governor)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise Conflict(f"a governor named {name!r} already exists in workspace {self.workspace!r}") from None
        return governor

    def get(self, governor_id: int) -> tuple[Governor, GovernorState]:
        found = self.session.scalar(
            select(Governor).where(Governor.id == governor_id, Governor.workspace == self.workspace).with_for_update()
        )
        if found is None:
            raise NotFound(f"governor {governor_id} not found in workspace {self.workspace!r}")
        return found, GovernorState.from_dict(found.state)

    def _save(self, governor: Governor, state: GovernorState, kind: str | None, details: dict[str, Any]) -> None:
        governor.state = state.as_dict()
        if kind is not None:
            self.session.add(
                GovernorEvent(
                    workspace=self.workspace,
                    governor_id=governor.id,
                    update_index=state.updates,
                    kind=kind,
                    values=dict(state.values),
                    details=details,
                )
            )
        self.session.flush()

    def change(self, governor_id: int, changes: dict[str, Any], reason: str = "") -> tuple[GovernorState, list[str]]:
        governor, state = self.get(governor_id)
        before = dict(state.values)
        values, clamped = propose(state, changes)
        self._save(
            governor,
            state,
            "change" if values != before else None,
            {"reason": reason, "clamped": clamped, "before": before},
        )
        return state, clamped

    def telemetry(self, governor_id: int, telemetry: dict[str, float]) -> tuple[GovernorState, float, str]:
        governor, state = self.get(governor_id)
        reward = meta_reward(telemetry, state.settings.weights)
        event = observe(state, reward)
        details = {"reward": reward, "ema": state.ema, "reference_ema": state.reference_ema}
        self._save(governor, state, None if event == "none" else event, details)
        if event == "accepted":
            self._pull_prior(governor.domain, state)
        return state, reward, event

    def _pull_prior(self, domain: str, state: GovernorState) -> None:
        """One Reptile step of the domain's prior toward the values that just proved good."""
        prior = self._prior(domain)
        knobs = state.knobs
        good = np.array([[k.normalise(state.good_values[k.name]) for k in knobs]])
        if prior is None or sorted(prior.values) != sorted(k.name for k in knobs):
            self.session.add(
                DomainPrior(
                    workspace=self.workspace,
                    domain=domain,
                    knobs=[asdict(k) for k in knobs],
                    values=dict(state.good_values),
                    updates=1,
                )
            )
        else:
            start = np.array([k.normalise(prior.values[k.name]) for k in knobs])
            unit = reptile_update(start, good, state.settings.prior_step)
            prior.values = {k.name: k.denormalise(u) for k, u in zip(knobs, unit)}
            prior.updates += 1
            prior.updated_at = utcnow()
        self.session.flush()

    def events(self, governor_id: int, limit: int = 100, after_id: int = 0) -> list[GovernorEvent]:
        governor, _ = self.get(governor_id)
        return list(
            self.session.scalars(
                select(GovernorEvent)
                .where(GovernorEvent.governor_id == governor.id, GovernorEvent.id > after_id)
                .order_by(GovernorEvent.id)
                .limit(limit)
            )
        )

    def set_prior(self, domain: str, knobs: list[Knob], values: dict[str, Any]) -> DomainPrior:
        if domain == GLOBAL_PRIOR:
            raise Unprocessable(f"domain {GLOBAL_PRIOR!r} is the combined prior; combine domains to change it")
        prior = self._prior(domain)
        clamped = {k.name: k.clamp(values.get(k.name, k.initial())) for k in knobs}
        if prior is None:
            prior = DomainPrior(
                workspace=self.workspace, domain=domain, knobs=[asdict(k) for k in knobs], values=clamped
            )
            self.session.add(prior)
        else:
            prior.knobs, prior.values, prior.updated_at = [asdict(k) for k in knobs], clamped, utcnow()
        self.session.flush()
        return prior

    def priors(self) -> list[DomainPrior]:
        return list(
            self.session.scalars(
                select(DomainPrior).where(DomainPrior.workspace == self.workspace).order_by(DomainPrior.domain)
            )
        )

    def combine(self, step_size: float = 1.0) -> Combination:
        """Update the combined prior ``*`` from the domains sharing the knobs of the most common knob set."""
        domains = [p for p in self.priors() if p.domain != GLOBAL_PRIOR]
        if not domains:
            raise Conflict("no domain priors to combine yet")
        signature = max(
            {tuple(sorted(v["name"] for v in p.knobs)) for p in domains},
            key=lambda s: sum(tuple(sorted(v["name"] for v in p.knobs)) == s for p in domains),
        )
        same = [p for p in domains if tuple(sorted(v["name"] for v in p.knobs)) == signature]
        knobs = [Knob(**k) for k in same[0].knobs]
        current = self._prior(GLOBAL_PRIOR)
        result = combine_priors(
            current.values if current else None, {p.domain: p.values for p in same}, knobs, step_size
        )
        if current is None:
            self.session.add(
                DomainPrior(
                    workspace=self.workspace,
                    domain=GLOBAL_PRIOR,
                    knobs=[asdict(k) for k in knobs],
                    values=result.values,
                    updates=1,
                )
            )
        else:
            current.values, current.updates, current.updated_at = result.values, current.updates + 1, utcnow()
        self.session.flush()
        return result
