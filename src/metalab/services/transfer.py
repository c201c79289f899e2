"""Transfer insights across workspaces, released with differential privacy through OpenDP.

Each workspace may publish a transfer profile: a profile vector (numbers describing its jobs), metric
values it agrees to share (say its best batch size or its error rate) and its privacy budget. Another
workspace asks for an insight about one metric: the mean over the workspaces whose profile is similar to
its own (cosine similarity >= ``min_similarity``, ``scipy.spatial.distance.cosine``).

The release is OpenDP's: the clipped sum and the count of the cohort's values
(``make_sum`` / ``make_count`` over ``vector_domain(atom_domain(bounds=(lower, upper)))`` under the
symmetric distance, i.e. adding or removing one workspace), each through the Gaussian mechanism, composed
under zero-concentrated DP and converted to (epsilon, delta)-DP; the noise scale is the least that OpenDP's
own ``map`` certifies (epsilon, delta)-DP (a bisection, :func:`smallest_private_scale`) for one workspace
(epsilon = 1.0, delta =
1e-6 by default). The mean is sum / count, post-processing. OpenDP accounts for floating-point rounding
in the sum's sensitivity; nothing here computes a sensitivity or draws noise itself.

Budget: every release is charged (epsilon, delta) to each contributing workspace in the privacy ledger
(sequential composition: a workspace's spent epsilon is the sum of its charges). A query that would take
any contributor past its budget is refused (403) and charges nothing; the caller learns only that the
budget is spent. The minimum cohort size is checked on the exact count before any release (nothing
released, nothing charged when it is not met); that yes/no is outside the epsilon guarantee, as in any
k-anonymity-style threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import opendp.prelude as dp
from scipy.spatial.distance import cosine
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metalab.services.errors import Conflict, NotFound, ServiceError, Unprocessable
from metalab.services.store.models import PrivacyCharge, TransferProfile

dp.enable_features("contrib")  # OpenDP gates its non-vetted constructors (Gaussian on float sums) behind this flag


class BudgetExhausted(ServiceError):
    status_code = 403


@dataclass(frozen=True)
class TransferConfig:
    epsilon: float = 1.0
    delta: float = 1e-6
    min_workspaces: int = 5
    min_similarity: float = 0.8
    budget_epsilon: float = 3.0
    budget_delta: float = 1e-5


@dataclass(frozen=True)
class Release:
    """A private mean: the noisy sum and count OpenDP released, and their ratio clipped to the bounds."""

    mean: float
    noisy_sum: float
    noisy_count: float
    sum_scale: float
    count_scale: float
    epsilon: float
    delta: float


def _mechanism(lower: float, upper: float, count_scale: float):
    """(sum, count) of a bounded vector, each with Gaussian noise; the sum's scale is the count's times the
    largest |value| (its sensitivity under add/remove), so both carry the same share of the budget."""
    domain = dp.vector_domain(dp.atom_domain(bounds=(float(lower), float(upper)), nan=False))
    reach = max(abs(lower), abs(upper), 1e-12)
    return dp.c.make_composition(
        [
            dp.t.make_sum(domain, dp.symmetric_distance()) >> dp.m.then_gaussian(count_scale * reach),
            dp.t.make_count(domain, dp.symmetric_distance()) >> dp.m.then_gaussian(count_scale),
        ]
    )


@lru_cache(maxsize=256)
def calibrated_mean_release(lower: float, upper: float, epsilon: float, delta: float):
    """The OpenDP measurement that is (epsilon, delta)-DP for adding or removing one workspace's value."""
    if not lower < upper:
        raise Unprocessable(f"lower={lower} must be below upper={upper}")
    if not 0 < epsilon <= 10 or not 0 < delta < 1e-2:
        raise Unprocessable("epsilon must be in (0, 10] and delta in (0, 0.01)")

    def approximate(scale: float):
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(_mechanism(lower, upper, scale)), delta)

    scale = smallest_private_scale(lambda scale: approximate(scale).map(1)[0] <= epsilon)
    return approximate(scale), scale * max(abs(lower), abs(upper), 1e-12), scale


def smallest_private_scale(is_private, low: float = 1e-3, high: float = 1e4, steps: int = 24) -> float:
    """Bisection in log-scale for the least noise OpenDP certifies, returning the upper (private) end.

    OpenDP's ``binary_search_param`` bisects to machine precision (hundreds of measurement builds, tens
    of seconds here); 24 halvings of [1e-3, 1e4] give the scale to a relative 1e-6, always on the side
    that OpenDP's own ``map`` certified.
    """
    if not is_private(high):
        raise Unprocessable("epsilon and delta are too small for any noise scale up to 1e4 times the value range")
    for _ in range(steps):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if is_private(middle) else (middle, high)
    return high


def private_mean(values: list[float], lower: float, upper: float, epsilon: float, delta: float) -> Release:
    measurement, sum_scale, count_scale = calibrated_mean_release(
        float(lower), float(upper), float(epsilon), float(delta)
    )
    noisy_sum, noisy_count = measurement([float(np.clip(v, lower, upper)) for v in values])
    mean = float(np.clip(noisy_sum / max(float(noisy_count), 1.0), lower, upper))
    return Release(mean, float(noisy_sum), float(noisy_count), sum_scale, count_scale, epsilon, delta)


def similarity(a: dict[str, float], b: dict[str, float]) -> float:
    """Cosine similarity of two profile vectors over their shared feature names (0 when none or a zero vector)."""
    names = sorted(set(a) & set(b))
    if not names:
        return 0.0
    u, v = np.array([a[n] for n in names], dtype=float), np.array([b[n] for n in names], dtype=float)
    if not u.any() or not v.any():
        return 0.0
    return float(1.0 - cosine(u, v))


class TransferService:
    def __init__(self, session: Session, workspace: str, config: TransferConfig | None = None):
        self.session, self.workspace = session, workspace
        self.config = config or TransferConfig()

    def publish(
        self, features: dict[str, float], metrics: dict[str, float], budget_epsilon: float | None = None
    ) -> TransferProfile:
        """Create or update this workspace's shared profile; the budget is set once, at the first publish."""
        profile = self.session.get(TransferProfile, self.workspace)
        if profile is None:
            profile = TransferProfile(
                workspace=self.workspace,
                features={},
                metrics={},
                budget_epsilon=budget_epsilon or self.config.budget_epsilon,
                budget_delta=self.config.budget_delta,
            )
            self.session.add(profile)
        elif budget_epsilon is not None and budget_epsilon != profile.budget_epsilon:
            raise Conflict("the privacy budget is set once, when the profile is first published")
        profile.features = {k: float(v) for k, v in features.items()}
        profile.metrics = {k: float(v) for k, v in metrics.items()}
        self.session.flush()
        return profile

    def spent(self, workspace: str | None = None) -> tuple[float, float]:
        row = self.session.execute(
            select(
                func.coalesce(func.sum(PrivacyCharge.epsilon), 0.0), func.coalesce(func.sum(PrivacyCharge.delta), 0.0)
            ).where(PrivacyCharge.workspace == (workspace or self.workspace))
        ).one()
        return float(row[0]), float(row[1])

    def budget(self) -> dict[str, float]:
        profile = self.session.get(TransferProfile, self.workspace)
        if profile is None:
            raise NotFound(f"workspace {self.workspace!r} has not published a transfer profile")
        epsilon, delta = self.spent()
        return {
            "budget_epsilon": profile.budget_epsilon,
            "spent_epsilon": epsilon,
            "remaining_epsilon": profile.budget_epsilon - epsilon,
            "budget_delta": profile.budget_delta,
            "spent_delta": delta,
        }

    def cohort(self, metric: str, min_similarity: float) -> list[TransferProfile]:
        mine = self.session.get(TransferProfile, self.workspace)
        if mine is None:
            raise Conflict("publish this workspace's transfer profile first: similarity is measured against it")
        profiles = self.session.scalars(select(TransferProfile).order_by(TransferProfile.workspace).with_for_update())
        return [p for p in profiles if metric in p.metrics and similarity(mine.features, p.features) >= min_similarity]

    def insight(
        self, metric: str, lower: float, upper: float, epsilon: float | None = None, min_similarity: float | None = None
    ) -> tuple[Release, int]:
        """A private mean of ``metric`` over similar workspaces; charges every contributor (or refuses)."""
        epsilon = self.config.epsilon if epsilon is None else epsilon
        delta = self.config.delta
        calibrated_mean_release(float(lower), float(upper), float(epsilon), float(delta))  # bad bounds: 422 first
        members = self.cohort(metric, self.config.min_similarity if min_similarity is None else min_similarity)
        if len(members) < self.config.min_workspaces:
            raise Conflict(
                f"fewer than {self.config.min_workspaces} similar workspaces share {metric!r}: no insight is released"
            )
        short = [
            p.workspace
            for p in members
            if self.spent(p.workspace)[0] + epsilon > p.budget_epsilon + 1e-12
            or self.spent(p.workspace)[1] + delta > p.budget_delta + 1e-18
        ]
        if short:
            raise BudgetExhausted(
                f"privacy budget spent: this release (epsilon {epsilon}) would exceed the budget of "
                f"{len(short)} contributing workspace(s); nothing was released or charged"
            )
        release = private_mean([p.metrics[metric] for p in members], lower, upper, epsilon, delta)
        for p in members:
            self.session.add(
                PrivacyCharge(
                    workspace=p.workspace, requested_by=self.workspace, metric=metric, epsilon=epsilon, delta=delta
                )
            )
        self.session.flush()
        return release, self.config.min_workspaces

    def enough_similar(self, metric: str, min_similarity: float | None = None) -> bool:
        level = self.config.min_similarity if min_similarity is None else min_similarity
        return len(self.cohort(metric, level)) >= self.config.min_workspaces


def release_as_dict(release: Release) -> dict[str, Any]:
    return dict(release.__dict__)
