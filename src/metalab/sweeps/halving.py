"""Synchronous successive halving as an Optuna pruner, and the rung schedule it shares with Optuna's own.

Successive halving (Karnin et al. 2013; Jamieson & Talwalkar 2016, "Non-stochastic best arm identification
and hyperparameter optimization") trains every arm for a small resource, keeps the best ``1/eta`` of them,
multiplies the resource by ``eta`` and repeats. Optuna's ``SuccessiveHalvingPruner`` is its asynchronous form
(ASHA, Li et al. 2020): a trial is judged when it reaches a rung, against the trials that reached the rung
*before* it, so the first trial always passes and, with a handful of arms run one after another, most of them
are promoted while the early ones have nothing to lose against. With a fixed, small set of candidates (model
selection over a categorical space) the synchronous rule is the one with the known cost: every arm reports
at a rung, then the top ``floor(n / eta)`` (at least one) go on. :class:`SynchronousHalvingPruner` is that rule
behind Optuna's pruner interface: it reads the values every trial *reported* at the rung step, so when a
scheduler lets all arms report before it asks ``should_prune`` (:mod:`metalab.sweeps.select`) the decision is
synchronous; driven by a sequential sweep it judges each trial against those that reported before it, as ASHA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.pruners import BasePruner

from metalab.errors import ConfigError


def rung_steps(min_resource: int, reduction_factor: int, max_resource: int) -> list[int]:
    """The resources at which arms are compared: ``min_resource * eta**k`` below ``max_resource``, then it."""
    _check_resources(min_resource, reduction_factor, max_resource)
    steps, step = [], min_resource
    while step < max_resource:
        steps.append(step)
        step *= reduction_factor
    return steps + [max_resource]


def survivors(values: Sequence[float], reduction_factor: int, maximize: bool = True) -> list[int]:
    """Indices of the arms one synchronous rung keeps: the best ``max(1, floor(n / eta))`` finite values.

    Ties at the threshold are all kept (no arm is eliminated by the order it was listed in); NaN is never kept
    unless every value is NaN, and then none is."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return []
    keep = max(1, len(values) // reduction_factor)
    ranked = sorted(finite, reverse=maximize)
    threshold = ranked[min(keep, len(ranked)) - 1]
    return [i for i, v in enumerate(values) if not math.isnan(v) and (v >= threshold if maximize else v <= threshold)]


class SynchronousHalvingPruner(BasePruner):
    """Prune a trial at a rung step unless its value there is among the best ``floor(m / eta)`` (at least 1)
    of the ``m`` trials of the study that reported a value at that step (itself included).

    ``min_resource`` and ``reduction_factor`` mean what they mean for Optuna's ``SuccessiveHalvingPruner``
    (rung ``k`` is at step ``min_resource * eta**k``); steps between rungs never prune. A NaN value is pruned.
    """

    def __init__(self, min_resource: int = 1, reduction_factor: int = 3) -> None:
        _check_resources(min_resource, reduction_factor, min_resource)
        self.min_resource, self.reduction_factor = int(min_resource), int(reduction_factor)

    def is_rung_step(self, step: int) -> bool:
        if step < self.min_resource or step % self.min_resource:
            return False
        ratio = step // self.min_resource
        while ratio % self.reduction_factor == 0:
            ratio //= self.reduction_factor
        return ratio == 1

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or not self.is_rung_step(step):
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and step in t.intermediate_values
        ]
        kept = survivors(
            [value, *others], self.reduction_factor, study.direction == optuna.study.StudyDirection.MAXIMIZE
        )
        return 0 not in kept


def _check_resources(min_resource: int, reduction_factor: int, max_resource: int) -> None:
    if not isinstance(min_resource, int) or min_resource < 1:
        raise ConfigError(f"min_resource={min_resource!r} is not allowed: must be an integer >= 1")
    if not isinstance(reduction_factor, int) or reduction_factor < 2:
        raise ConfigError(f"reduction_factor={reduction_factor!r} is not allowed: must be an integer >= 2")
    if not isinstance(max_resource, int) or max_resource < min_resource:
        raise ConfigError(
            f"max_resource={max_resource!r} is not allowed: must be an integer >= min_resource ({min_resource})"
        )
