"""Allocation policies of the experiment engine: which variant the next unit should get.

Each policy is a small object behind the :class:`AllocationPolicy` contract; it sees only the running
sums of every arm (arrays with the arms on the last axis, any leading batch axes), so the service and
the regret simulation (100 runs at once) call the same code. Rewards are oriented so that larger is
better (the engine negates them for a minimised metric).

- ``equal``: the arm with the fewest outcomes (ties at random): balanced, as a classic A/B test.
- ``thompson``: Thompson sampling (Thompson 1933; Agrawal and Goyal, COLT 2012): Beta(1 + s, 1 + f)
  posteriors for binary rewards, a normal posterior N(mean, var/n) with the plug-in variance for
  continuous ones.
- ``ucb``: UCB1 (Auer, Cesa-Bianchi and Fischer, Machine Learning 47, 2002): mean + sqrt(2 ln N / n);
  for continuous rewards the bonus is scaled by the arm's sample standard deviation.
Every policy first gives each arm one outcome (UCB1's initialisation; a posterior needs one look).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from metalab.services.sequential import plugin_variance


class AllocationPolicy(Protocol):
    def choose(
        self, count: NDArray, total: NDArray, total_squares: NDArray, binary: bool, rng: np.random.Generator
    ) -> NDArray:
        """Index of the arm to pull, one per leading batch position."""


def _argmax_random_ties(scores: NDArray, rng: np.random.Generator) -> NDArray:
    jitter = rng.random(scores.shape) * 1e-9
    return np.argmax(scores + jitter, axis=-1)


def _unpulled_first(count: NDArray, chosen: NDArray, rng: np.random.Generator) -> NDArray:
    """Where some arm has no outcome yet, pull one of those instead."""
    unpulled = count == 0
    has_unpulled = unpulled.any(axis=-1)
    first = _argmax_random_ties(unpulled.astype(float), rng)
    return np.where(has_unpulled, first, chosen)


class EqualAllocation:
    def choose(self, count, total, total_squares, binary, rng):
        return _argmax_random_ties(-np.asarray(count, dtype=float), rng)


class ThompsonSampling:
    def choose(self, count, total, total_squares, binary, rng):
        count = np.asarray(count, dtype=float)
        total = np.asarray(total, dtype=float)
        if binary:
            draws = rng.beta(1.0 + total, 1.0 + count - total)
        else:
            mean = total / np.maximum(count, 1.0)
            scale = np.sqrt(plugin_variance(count, total, total_squares, binary=False) / np.maximum(count, 1.0))
            draws = rng.normal(mean, scale)
        return _unpulled_first(count, np.argmax(draws, axis=-1), rng)


class UpperConfidenceBound:
    def choose(self, count, total, total_squares, binary, rng):
        count = np.asarray(count, dtype=float)
        pulls = np.maximum(count, 1.0)
        mean = np.asarray(total, dtype=float) / pulls
        bonus = np.sqrt(2.0 * np.log(np.maximum(count.sum(axis=-1, keepdims=True), 1.0)) / pulls)
        if not binary:
            bonus = bonus * np.sqrt(plugin_variance(count, total, total_squares, binary=False))
        return _unpulled_first(count, _argmax_random_ties(mean + bonus, rng), rng)


POLICIES: dict[str, type] = {"equal": EqualAllocation, "thompson": ThompsonSampling, "ucb": UpperConfidenceBound}


def policy_for(name: str) -> AllocationPolicy:
    return POLICIES[name]()
