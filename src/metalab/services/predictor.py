"""Performance predictor: a new job's duration, error rate and resources from its k most similar completed jobs.

Similar = nearest in the standardised profile vector (scikit-learn ``StandardScaler`` +
``KNeighborsRegressor``, k = 10 by default). Intervals are split conformal (Vovk et al. 2005; Lei et al.
2018, "Distribution-free predictive inference for regression") through MAPIE's
``SplitConformalRegressor``: the library is split once (seeded) into a part the neighbours come from and a
calibration part (about a quarter, sized by :func:`calibration_size`) whose absolute residuals set the
interval half-width, so for exchangeable jobs an
interval at confidence 1 - a covers the truth with probability at least 1 - a, whatever the
simulator or the model. Durations and resources are predicted on a log scale (positive, multiplicative
noise), the interval mapped back by ``exp`` (a monotone map keeps coverage).

Recommended resources: the upper end of the resources interval (enough for ``confidence`` of similar
jobs). Risk flags: ``unfamiliar_job`` (the mean distance to its k neighbours is above the 95th
percentile of that distance among the calibration jobs), ``high_error_rate`` (the error-rate interval
reaches ``error_rate_threshold``), ``uncertain_duration`` (the duration interval spans more than a
factor ``duration_spread``), ``small_library`` (fewer than ``small_library`` completed jobs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mapie.regression import SplitConformalRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metalab.services.errors import Conflict, Unprocessable
from metalab.services.store.models import CompletedJob

TARGETS = ("duration_s", "error_rate", "resources")
LOG_TARGETS = {"duration_s", "resources"}


@dataclass(frozen=True)
class PredictorConfig:
    k: int = 10
    confidence: float = 0.9
    calibration_fraction: float = 0.25
    min_jobs: int = 40
    seed: int = 0
    error_rate_threshold: float = 0.1
    duration_spread: float = 2.0
    small_library: int = 100


@dataclass
class Prediction:
    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    recommended_resources: float
    risk_flags: list[str]
    neighbours: int
    library_size: int
    calibration_jobs: int
    neighbour_distance: float = field(default=0.0)


def calibration_size(n: int, config: PredictorConfig) -> int:
    """About ``calibration_fraction`` of the library, moved up to the next size m for which (m + 1) *
    confidence is (nearest to) a whole number: split conformal's coverage is ceil((m + 1)(1 - a)) / (m + 1)
    in expectation (Lei et al. 2018, Theorem 2.2), exactly 1 - a at those sizes and up to 1 / (m + 1)
    above it elsewhere (25 calibration jobs at 90% would cover 92.3%)."""
    smallest = max(int(round(config.calibration_fraction * n)), int(np.ceil(1 / (1 - config.confidence))) - 1)
    period = int(np.ceil(1 / (1 - config.confidence))) * 10
    sizes = [m for m in range(smallest, smallest + period + 1) if n - m >= config.k]
    if not sizes:
        return smallest
    excess = [np.ceil((m + 1) * config.confidence - 1e-9) - (m + 1) * config.confidence for m in sizes]
    return sizes[int(np.argmin(excess))]


def _split(n: int, config: PredictorConfig) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(config.seed).permutation(n)
    calibration = calibration_size(n, config)
    return np.sort(order[calibration:]), np.sort(order[:calibration])


def fit_predict(
    features: np.ndarray, targets: dict[str, np.ndarray], new: np.ndarray, config: PredictorConfig
) -> list[Prediction]:
    """Predictions for the rows of ``new`` [m, d] from a library ``features`` [n, d] with ``targets`` {name: [n]}."""
    n = len(features)
    if n < config.min_jobs:
        raise Conflict(f"the predictor needs at least {config.min_jobs} completed jobs; this workspace has {n}")
    train, calibration = _split(n, config)
    if len(train) < config.k:
        raise Conflict(f"k={config.k} neighbours need at least {config.k} jobs outside the calibration split")
    estimates, intervals = {}, {}
    for name in TARGETS:
        y = np.log(targets[name]) if name in LOG_TARGETS else targets[name]
        model = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=config.k)).fit(
            features[train], y[train]
        )
        conformal = SplitConformalRegressor(model, confidence_level=config.confidence, prefit=True)
        conformal.conformalize(features[calibration], y[calibration])
        point, bounds = conformal.predict_interval(new)
        low, high = bounds[:, 0, 0], bounds[:, 1, 0]
        if name in LOG_TARGETS:
            point, low, high = np.exp(point), np.exp(low), np.exp(high)
        estimates[name], intervals[name] = point, (low, high)
    distance = _neighbour_distance(features[train], features[calibration], new, config.k)
    return [_prediction(i, estimates, intervals, distance, n, len(calibration), config) for i in range(len(new))]


def _neighbour_distance(
    train: np.ndarray, calibration: np.ndarray, new: np.ndarray, k: int
) -> tuple[np.ndarray, float]:
    """Mean distance of each new job to its k neighbours, and the 95th percentile of it among calibration jobs."""
    scaler = StandardScaler().fit(train)
    knn = KNeighborsRegressor(n_neighbors=k).fit(scaler.transform(train), np.zeros(len(train)))
    new_distance = knn.kneighbors(scaler.transform(new))[0].mean(axis=1)
    calibration_distance = knn.kneighbors(scaler.transform(calibration))[0].mean(axis=1)
    return new_distance, float(np.quantile(calibration_distance, 0.95))


def _prediction(
    i: int,
    estimates: dict,
    intervals: dict,
    distance: tuple[np.ndarray, float],
    n: int,
    calibration: int,
    config: PredictorConfig,
) -> Prediction:
    estimate = {name: float(estimates[name][i]) for name in TARGETS}
    interval = {name: (float(intervals[name][0][i]), float(intervals[name][1][i])) for name in TARGETS}
    interval["error_rate"] = (max(0.0, interval["error_rate"][0]), min(1.0, interval["error_rate"][1]))
    flags = []
    if distance[0][i] > distance[1]:
        flags.append("unfamiliar_job")
    if interval["error_rate"][1] >= config.error_rate_threshold:
        flags.append("high_error_rate")
    low, high = interval["duration_s"]
    if high > config.duration_spread * low:
        flags.append("uncertain_duration")
    if n < config.small_library:
        flags.append("small_library")
    return Prediction(
        estimate, interval, interval["resources"][1], flags, config.k, n, calibration, float(distance[0][i])
    )


class PredictorService:
    """Completed jobs and predictions, for one workspace on one session."""

    def __init__(self, session: Session, workspace: str, config: PredictorConfig | None = None):
        self.session, self.workspace = session, workspace
        self.config = config or PredictorConfig()

    def feature_names(self) -> list[str] | None:
        first = self.session.scalar(
            select(CompletedJob.features).where(CompletedJob.workspace == self.workspace).limit(1)
        )
        return None if first is None else sorted(first)

    def _check_features(self, features: dict[str, float]) -> None:
        names = self.feature_names()
        if names is not None and sorted(features) != names:
            raise Unprocessable(
                f"profile vectors of this workspace have the features {', '.join(names)}; "
                f"got {', '.join(sorted(features))}"
            )

    def record(
        self, features: dict[str, float], duration_s: float, error_rate: float, resources: float
    ) -> CompletedJob:
        self._check_features(features)
        if duration_s <= 0 or resources <= 0 or not 0 <= error_rate <= 1:
            raise Unprocessable("duration_s and resources must be > 0 and error_rate in [0, 1]")
        job = CompletedJob(
            workspace=self.workspace,
            features={k: float(v) for k, v in features.items()},
            duration_s=duration_s,
            error_rate=error_rate,
            resources=resources,
        )
        self.session.add(job)
        self.session.flush()
        return job

    def count(self) -> int:
        return int(
            self.session.scalar(
                select(func.count()).select_from(CompletedJob).where(CompletedJob.workspace == self.workspace)
            )
        )

    def predict(self, features: dict[str, float], k: int | None = None, confidence: float | None = None) -> Prediction:
        config = self.config
        if k is not None or confidence is not None:
            config = PredictorConfig(
                **{**config.__dict__, **({"k": k} if k else {}), **({"confidence": confidence} if confidence else {})}
            )
        names = self.feature_names()
        if names is None:
            raise Conflict(f"the predictor needs at least {config.min_jobs} completed jobs; this workspace has 0")
        self._check_features(features)
        rows = self.session.execute(
            select(CompletedJob.features, CompletedJob.duration_s, CompletedJob.error_rate, CompletedJob.resources)
            .where(CompletedJob.workspace == self.workspace)
            .order_by(CompletedJob.id)
        ).all()
        library = np.array([[r[0][name] for name in names] for r in rows], dtype=np.float64)
        targets: dict[str, Any] = {
            name: np.array([r[i + 1] for r in rows], dtype=np.float64) for i, name in enumerate(TARGETS)
        }
        new = np.array([[features[name] for name in names]], dtype=np.float64)
        return fit_predict(library, targets, new, config)[0]
