"""NSGA-II ranking, crowding and hypervolume against brute-force computations from the definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from metalab.search.pareto import crowding_distance, hypervolume_2d, non_dominated_fronts, rank_order, select_survivors


def dominates(a, b):
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def brute_force_fronts(fitness):
    """Peel fronts by the definition: the members no remaining individual dominates."""
    remaining, fronts = list(range(len(fitness))), []
    while remaining:
        front = [i for i in remaining if not any(dominates(fitness[j], fitness[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def brute_force_crowding(points):
    """Deb et al. 2002, by hand: per objective, neighbours in sorted order, range-normalised."""
    n, m = len(points), len(points[0])
    distance = [0.0] * n
    for k in range(m):
        order = sorted(range(n), key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = float("inf")
        for pos in range(1, n - 1):
            i = order[pos]
            distance[i] += (points[order[pos + 1]][k] - points[order[pos - 1]][k]) / (hi - lo)
    return distance


@pytest.mark.parametrize("objectives", [2, 3])
def test_fronts_match_the_definition(objectives):
    rng = np.random.default_rng(objectives)
    fitness = rng.integers(0, 6, size=(60, objectives)).astype(float)  # small integers: many ties and equal points
    ours = [sorted(f.tolist()) for f in non_dominated_fronts(fitness)]
    assert ours == brute_force_fronts(fitness.tolist())


def test_crowding_matches_the_definition():
    rng = np.random.default_rng(1)
    points = rng.random((25, 3))
    np.testing.assert_allclose(crowding_distance(points), brute_force_crowding(points.tolist()))


def test_rank_order_is_front_then_crowding():
    rng = np.random.default_rng(2)
    fitness = rng.random((40, 2))
    order = rank_order(fitness)
    fronts = brute_force_fronts(fitness.tolist())
    front_of = {i: k for k, front in enumerate(fronts) for i in front}
    assert [front_of[i] for i in order] == sorted(front_of[i] for i in order)
    first = order[: len(fronts[0])]
    crowding = dict(zip(fronts[0], brute_force_crowding(fitness[fronts[0]].tolist())))
    assert [crowding[i] for i in first] == sorted(crowding.values(), reverse=True)


def test_survivor_pruning_removes_the_most_crowded_one_at_a_time():
    rng = np.random.default_rng(3)
    x = np.sort(rng.random(30))
    front = np.stack([x, 1 - x], axis=1)  # all mutually non-dominated
    kept = set(select_survivors(front, 20).tolist())
    members = list(range(30))
    while len(members) > 20:  # reference: recompute crowding by hand after each removal
        crowding = brute_force_crowding(front[members].tolist())
        members.pop(int(np.argmin(crowding)))
    assert kept == set(members)


def brute_force_hypervolume(points, reference):
    """Union of boxes [p, reference] by coordinate compression: every grid cell covered or not."""
    xs = sorted({p[0] for p in points} | {reference[0]})
    ys = sorted({p[1] for p in points} | {reference[1]})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs, xs[1:]), zip(ys, ys[1:])):
        if any(p[0] <= x0 and p[1] <= y0 for p in points):
            area += (x1 - x0) * (y1 - y0)
    return area


def test_hypervolume_matches_the_union_of_boxes():
    rng = np.random.default_rng(4)
    points = rng.random((30, 2)) * 1.3  # some beyond the reference, many dominated
    expected = brute_force_hypervolume([p for p in points.tolist() if p[0] < 1.1 and p[1] < 1.1], (1.1, 1.1))
    assert hypervolume_2d(points, (1.1, 1.1)) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_of_the_zdt1_front():
    """The analytic ZDT1 front f2 = 1 - sqrt(f1) at reference (1.1, 1.1): 1.21 - 1/3 = 0.876667."""
    from metalab.search.problems import ZDT

    assert hypervolume_2d(ZDT(1).true_front(20001), (1.1, 1.1)) == pytest.approx(0.876667, abs=1e-4)
