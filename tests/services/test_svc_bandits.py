"""Allocation policies: regret on Bernoulli arms with known means (small; the script runs 10,000 x 100)."""

import numpy as np
import pytest

from experiments.services.simulate import bandit_regret
from metalab.services.bandits import policy_for

MEANS = [0.3, 0.5, 0.7]


@pytest.mark.parametrize("allocation", ["thompson", "ucb"])
def test_regret_is_small_and_sublinear(allocation):
    regret = bandit_regret(allocation, MEANS, pulls=2000, runs=20, seed=0).mean(axis=0)
    uniform = bandit_regret("equal", MEANS, pulls=2000, runs=20, seed=0).mean(axis=0)
    assert regret[-1] < 0.25 * uniform[-1]
    assert regret[1999] - regret[999] < 0.6 * regret[999]  # the second thousand pulls cost less than the first


def test_equal_allocation_is_balanced():
    count = np.zeros((1, 3))
    rng = np.random.default_rng(0)
    for _ in range(30):
        count[0, policy_for("equal").choose(count, count * 0, count * 0, True, rng)] += 1
    assert count.tolist() == [[10, 10, 10]]


def test_thompson_prefers_the_arm_with_more_successes():
    rng = np.random.default_rng(0)
    count, total = np.array([[100.0, 100.0]]).repeat(500, 0), np.array([[20.0, 60.0]]).repeat(500, 0)
    chosen = policy_for("thompson").choose(count, total, total, True, rng)
    assert (chosen == 1).mean() > 0.99


def test_mabwiser_comparison_runs_on_the_same_arms():
    pytest.importorskip("mabwiser")
    from experiments.services.simulate import mabwiser_regret

    regret = mabwiser_regret("ucb", MEANS, pulls=300, runs=2, seed=0)
    assert regret.shape == (2, 300) and np.all(np.diff(regret, axis=1) >= 0)
