"""Pareto ranking (NSGA-II, Deb et al. 2002) and the 2-D hypervolume.

Fitness here is maximised, ``[n, objectives]``. ``a`` dominates ``b`` when it is at least as good in
every objective and better in one. The whole domination relation of a population is one ``[n, n]``
boolean matrix: at NSGA-II's sizes (a few hundred) that is faster in numpy than Deb's bookkeeping loop,
and the test checks it against a brute-force definition.
"""

from __future__ import annotations

import numpy as np


def domination_matrix(fitness: np.ndarray) -> np.ndarray:
    """``[n, n]``: entry ``(i, j)`` is True when individual ``i`` dominates ``j``."""
    n = len(fitness)
    at_least, better = np.ones((n, n), dtype=bool), np.zeros((n, n), dtype=bool)
    for column in fitness.T:  # one [n, n] comparison per objective: no [n, n, objectives] temporaries
        at_least &= column[:, None] >= column[None, :]
        better |= column[:, None] > column[None, :]
    return at_least & better


def non_dominated_fronts(fitness: np.ndarray) -> list[np.ndarray]:
    """Indices of front 0 (dominated by none), front 1 (dominated only by front 0), ... in index order."""
    dominates = domination_matrix(np.asarray(fitness, dtype=np.float64))
    dominated_by = dominates.sum(axis=0)
    remaining = np.ones(len(fitness), dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominated_by == 0))
        fronts.append(front)
        remaining[front] = False
        dominated_by = dominated_by - dominates[front].sum(axis=0)
    return fronts


def crowding_distance(fitness: np.ndarray) -> np.ndarray:
    """Per individual of one front: the summed, range-normalised gap between its two neighbours along
    each objective; the extremes of each objective get infinity so they are always kept."""
    n, objectives = fitness.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(objectives):
        order = np.argsort(fitness[:, k], kind="stable")
        values = fitness[order, k]
        span = values[-1] - values[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def rank_order(fitness: np.ndarray) -> np.ndarray:
    """Indices best first. One objective: by fitness. Several: by front, then by crowding distance
    (larger first) within a front -- NSGA-II's survival order."""
    fitness = np.asarray(fitness, dtype=np.float64)
    if fitness.ndim == 1 or fitness.shape[1] == 1:
        return np.argsort(-fitness.reshape(len(fitness)), kind="stable")
    order = []
    for front in non_dominated_fronts(fitness):
        crowding = crowding_distance(fitness[front])
        order.append(front[np.argsort(-crowding, kind="stable")])
    return np.concatenate(order)


def hypervolume_2d(objectives: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by a set of *minimised* 2-D objective vectors and bounded by ``reference``.

    Points not strictly better than the reference in both objectives add nothing. Sweep along the first
    objective: each point of the non-dominated staircase adds the rectangle up to the next point.
    """
    points = np.asarray(objectives, dtype=np.float64).reshape(-1, 2)
    points = points[(points[:, 0] < reference[0]) & (points[:, 1] < reference[1])]
    if len(points) == 0:
        return 0.0
    points = points[np.lexsort((points[:, 1], points[:, 0]))]
    area, best_second = 0.0, reference[1]
    next_first = np.append(points[1:, 0], reference[0])
    for (first, second), right in zip(points, next_first):
        best_second = min(best_second, second)
        area += (right - first) * (reference[1] - best_second)
    return float(area)


def select_survivors(fitness: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` best, best first: whole fronts while they fit, then the front that does
    not fit pruned one individual at a time, the most crowded first, recomputing crowding after each
    removal (Kukkonen and Deb 2006). One-shot truncation by crowding (the original NSGA-II) can delete
    both members of a close pair and leave a gap; removing one and re-measuring keeps the spread even.
    One objective: simply the ``count`` fittest."""
    fitness = np.asarray(fitness, dtype=np.float64)
    if fitness.ndim == 1 or fitness.shape[1] == 1:
        return rank_order(fitness)[:count]
    chosen: list[np.ndarray] = []
    for front in non_dominated_fronts(fitness):
        room = count - sum(len(c) for c in chosen)
        if room <= 0:
            break
        members = front
        while len(members) > room:
            members = np.delete(members, int(np.argmin(crowding_distance(fitness[members]))))
        crowding = crowding_distance(fitness[members])
        chosen.append(members[np.argsort(-crowding, kind="stable")])
    return np.concatenate(chosen)
