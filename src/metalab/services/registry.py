"""Model registry with drift detection, a retrain hook and recorded rollback.

Drift compares recent inputs of a model with the reference sample stored with its active version, one
feature at a time, with three statistics from scipy and numpy:

- Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``): has the mean moved?
- two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``): has the distribution moved? Its statistic D,
  the largest gap between the two empirical CDFs, is already a distance in [0, 1];
- population stability index over the reference's deciles, PSI = sum (q - p) ln(q / p) (Siddiqi 2006,
  "Credit Risk Scorecards"; empty bins floored at 1e-4), which weighs the tails more than KS does.

A feature's normalised drift score is max(D, 1 - exp(-PSI)), in [0, 1): D reads directly as "share of
the population displaced"; 1 - exp(-PSI) maps PSI's usual 0.1 / 0.25 marks to 0.095 / 0.22, near the
same 0.1 / 0.2. A normal mean shift of 0.25 / 0.5 standard deviations has D = 0.10 / 0.20. The model's
score is its worst feature's; the level is ``critical`` at >= 0.2, ``warning`` at >= 0.1 (configurable),
but only when the shift is also significant: the smallest t-test or KS p-value is below alpha / (2 *
features) (Bonferroni), so a stream without drift raises a warning with probability at most alpha.
Recommendation: continue monitoring / retrain soon / retrain now. A critical check records a
``retrain_requested`` event and calls the registered retrain hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.store.models import ModelEvent, ModelVersion, RegisteredModel

Level = Literal["none", "warning", "critical"]
RECOMMENDATION = {"none": "continue monitoring", "warning": "retrain soon", "critical": "retrain now"}
PSI_FLOOR = 1e-4
MAX_REFERENCE = 10_000


@dataclass(frozen=True)
class DriftConfig:
    warning: float = 0.1
    critical: float = 0.2
    alpha: float = 0.05
    bins: int = 10
    min_samples: int = 30


@dataclass
class FeatureDrift:
    feature: str
    mean_shift: float
    t_statistic: float
    t_p_value: float
    ks_statistic: float
    ks_p_value: float
    psi: float
    score: float


@dataclass
class DriftReport:
    score: float
    level: Level
    significant: bool
    recommendation: str
    features: list[FeatureDrift] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def population_stability_index(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """PSI over the reference's quantile bins (the outer bins open-ended so every recent value lands somewhere)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    q = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=len(edges) + 1) / len(recent)
    p, q = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def feature_drift(name: str, reference: np.ndarray, recent: np.ndarray, bins: int) -> FeatureDrift:
    t = stats.ttest_ind(recent, reference, equal_var=False)
    ks = stats.ks_2samp(recent, reference)
    psi = population_stability_index(reference, recent, bins)
    t_p = float(t.pvalue) if np.isfinite(t.pvalue) else (1.0 if np.mean(recent) == np.mean(reference) else 0.0)
    return FeatureDrift(
        name,
        float(np.mean(recent) - np.mean(reference)),
        float(np.nan_to_num(t.statistic)),
        t_p,
        float(ks.statistic),
        float(ks.pvalue),
        psi,
        max(float(ks.statistic), 1.0 - float(np.exp(-psi))),
    )


def drift_report(reference: dict[str, list[float]], recent: dict[str, list[float]], config: DriftConfig) -> DriftReport:
    """Compare every reference feature with its recent values (see the module docstring for the rule)."""
    missing = sorted(set(reference) - set(recent))
    if missing:
        raise Conflict(f"recent data lacks the features {', '.join(missing)} of the reference sample")
    short = [f for f in reference if len(recent[f]) < config.min_samples]
    if short:
        raise Unprocessable(f"at least {config.min_samples} recent values per feature are needed ({', '.join(short)})")
    features = [
        feature_drift(f, np.asarray(reference[f], dtype=float), np.asarray(recent[f], dtype=float), config.bins)
        for f in sorted(reference)
    ]
    worst = max(features, key=lambda d: d.score)
    threshold = config.alpha / (2 * len(features))
    significant = min(min(d.t_p_value, d.ks_p_value) for d in features) < threshold
    level: Level = "none"
    if significant and worst.score >= config.critical:
        level = "critical"
    elif significant and worst.score >= config.warning:
        level = "warning"
    return DriftReport(worst.score, level, significant, RECOMMENDATION[level], features)


class RetrainHook(Protocol):
    def __call__(self, workspace: str, model: str, version: str, report: DriftReport) -> None:
        """Start (or queue) a retraining of ``model``; called when a drift check is critical."""


class ModelRegistryService:
    def __init__(
        self,
        session: Session,
        workspace: str,
        config: DriftConfig | None = None,
        retrain_hooks: list[RetrainHook] | None = None,
    ):
        self.session, self.workspace = session, workspace
        self.config = config or DriftConfig()
        self.retrain_hooks: list[Callable[..., None]] = list(retrain_hooks or [])

    def _record(
        self,
        model: str,
        kind: str,
        from_version: str | None = None,
        to_version: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> ModelEvent:
        event = ModelEvent(
            workspace=self.workspace,
            model=model,
            kind=kind,
            from_version=from_version,
            to_version=to_version,
            details=details or {},
        )
        self.session.add(event)
        return event

    def model(self, name: str) -> RegisteredModel:
        found = self.session.get(RegisteredModel, (self.workspace, name))
        if found is None:
            raise NotFound(f"model {name!r} not found in workspace {self.workspace!r}")
        return found

    def version(self, name: str, version: str) -> ModelVersion:
        found = self.session.scalar(
            select(ModelVersion).where(
                ModelVersion.workspace == self.workspace, ModelVersion.model == name, ModelVersion.version == version
            )
        )
        if found is None:
            raise NotFound(f"model {name!r} has no version {version!r} in workspace {self.workspace!r}")
        return found

    def versions(self, name: str) -> list[ModelVersion]:
        self.model(name)
        return list(
            self.session.scalars(
                select(ModelVersion)
                .where(ModelVersion.workspace == self.workspace, ModelVersion.model == name)
                .order_by(ModelVersion.id)
            )
        )

    def register(
        self,
        name: str,
        version: str,
        metrics: dict[str, float],
        artifact: str,
        reference: dict[str, list[float]],
        activate: bool = True,
    ) -> ModelVersion:
        if any(len(v) > MAX_REFERENCE or len(v) < self.config.min_samples for v in reference.values()):
            raise Unprocessable(f"each reference feature needs {self.config.min_samples} to {MAX_REFERENCE} values")
        registered = self.session.get(RegisteredModel, (self.workspace, name))
        if registered is None:
            registered = RegisteredModel(workspace=self.workspace, name=name)
            self.session.add(registered)
        entry = ModelVersion(
            workspace=self.workspace,
            model=name,
            version=version,
            metrics=metrics,
            artifact=artifact,
            reference=reference,
        )
        self.session.add(entry)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise Conflict(f"model {name!r} already has a version {version!r}") from None
        self._record(name, "registered", to_version=version, details={"metrics": metrics})
        if activate or registered.active_version is None:
            self._record(name, "promoted", registered.active_version, version)
            registered.active_version = version
        self.session.flush()
        return entry

    def active(self, name: str) -> ModelVersion:
        registered = self.model(name)
        return self.version(name, registered.active_version)

    def check_drift(self, name: str, recent: dict[str, list[float]]) -> DriftReport:
        """Drift of recent inputs against the active version's reference; critical -> retrain hook."""
        current = self.active(name)
        report = drift_report(current.reference, recent, self.config)
        self._record(
            name,
            "drift_check",
            to_version=current.version,
            details={"score": report.score, "level": report.level, "recommendation": report.recommendation},
        )
        if report.level == "critical":
            self._record(name, "retrain_requested", to_version=current.version, details={"score": report.score})
            for hook in self.retrain_hooks:
                hook(self.workspace, name, current.version, report)
        self.session.flush()
        return report

    def rollback(self, name: str, version: str, reason: str = "") -> ModelVersion:
        """Make ``version`` the active one again; the event keeps who was replaced and why."""
        registered = self.model(name)
        target = self.version(name, version)
        if registered.active_version == version:
            raise Conflict(f"version {version!r} of model {name!r} is already active")
        self._record(name, "rollback", registered.active_version, version, {"reason": reason})
        registered.active_version = version
        self.session.flush()
        return target

    def events(self, name: str, limit: int = 100, after_id: int = 0) -> list[ModelEvent]:
        self.model(name)
        return list(
            self.session.scalars(
                select(ModelEvent)
                .where(ModelEvent.workspace == self.workspace, ModelEvent.model == name, ModelEvent.id > after_id)
                .order_by(ModelEvent.id)
                .limit(limit)
            )
        )
