"""Reptile's outer update as a pure function (Nichol, Achiam & Schulman 2018, "On first-order meta-learning
algorithms", Algorithm 2): move the initialisation toward the (weighted) mean of the task-adapted weights,

    theta <- theta + step_size * (sum_t w_t theta_t - theta),     w_t = 1 / tasks unless given.

It works on anything with numpy-style arithmetic (torch tensors, numpy arrays), with the task axis first.
The Reptile learner (:mod:`metalab.learners.meta.reptile`) and the hyperparameter governor's cross-domain
priors (:mod:`metalab.services.governor`) both call it, so the interpolation exists once, in the core beside
the inner loop. Importing this module imports no torch (``metalab.adapt`` loads its torch modules lazily), so
the services stay torch-free.
"""

from __future__ import annotations

from typing import Any


def task_mean(adapted: Any, weights: Any = None) -> Any:
    """Mean over the leading task axis; with ``weights`` (one per task, summing to 1) a weighted mean."""
    if weights is None:
        return adapted.mean(0)
    return (adapted * weights.reshape((-1,) + (1,) * (adapted.ndim - 1))).sum(0)


def reptile_direction(initial: Any, adapted: Any, weights: Any = None) -> Any:
    """``mean_t(theta_t) - theta``: where Reptile moves the initialisation (the negated meta-gradient)."""
    return task_mean(adapted, weights) - initial


def reptile_update(initial: Any, adapted: Any, step_size: float, weights: Any = None) -> Any:
    """``theta + step_size * (mean_t(theta_t) - theta)``; ``step_size = 1`` jumps to the mean."""
    return initial + step_size * reptile_direction(initial, adapted, weights)
