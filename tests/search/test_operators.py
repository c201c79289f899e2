"""Crossover and mutation per gene type: bounds kept, rates honoured, discrete genes stay discrete."""

from __future__ import annotations

import numpy as np
import pytest

from metalab.search.operators import crossover, mutate, polynomial_mutation, sbx_crossover
from metalab.search.space import CategoricalGene, FloatGene, IntGene, SearchSpace

SPACE = SearchSpace(
    [
        FloatGene("f", -1.0, 2.0),
        FloatGene("lr", 1e-4, 1.0, log=True),
        IntGene("n", 1, 3),
        CategoricalGene("op", ("conv", "pool", "skip", "zero")),
    ]
)


def test_mutation_keeps_bounds_and_types():
    rng = np.random.default_rng(0)
    genomes = SPACE.sample(5000, rng)
    mutated = mutate(SPACE, genomes, eta=20.0, rate=1.0, rng=rng)
    assert (mutated >= SPACE.low).all() and (mutated <= SPACE.high).all()
    assert (mutated[:, 2:] == np.round(mutated[:, 2:])).all()
    assert (mutated[:, 2] != genomes[:, 2]).all(), "a selected int gene must move by at least one step"
    assert (mutated[:, 3] != genomes[:, 3]).all(), "a selected categorical gene must take another choice"
    assert set(np.unique(mutated[:, 3])) == {0.0, 1.0, 2.0, 3.0}


def test_mutation_rate_is_per_gene():
    rng = np.random.default_rng(1)
    genomes = SPACE.sample(20000, rng)
    changed = mutate(SPACE, genomes, eta=20.0, rate=0.1, rng=rng) != genomes
    assert np.allclose(changed.mean(axis=0), 0.1, atol=0.01)


def test_polynomial_mutation_is_unbiased_and_local():
    rng = np.random.default_rng(2)
    genomes = np.full((200000, 1), 0.5)
    moved = polynomial_mutation(genomes, np.zeros(1), np.ones(1), eta=20.0, rate=1.0, rng=rng)
    delta = moved - 0.5
    assert abs(delta.mean()) < 1e-3  # symmetric around the parent in the middle of the range
    # Deb's distribution: P(|delta| > d) = (1 - d)^(eta+1) for the unbounded form; the bound correction at 0.5
    # is ~0.5^21
    for d in (0.01, 0.05, 0.1):
        assert np.mean(np.abs(delta) > d) == pytest.approx((1 - d) ** 21, abs=0.005)


def test_sbx_children_keep_the_parents_mean_and_bounds():
    rng = np.random.default_rng(3)
    a, b = rng.random((5000, 4)), rng.random((5000, 4))
    low, high = np.zeros(4), np.ones(4)
    c, d = sbx_crossover(a, b, low, high, eta=15.0, rng=rng, gene_probability=1.0)
    assert (c >= 0).all() and (c <= 1).all() and (d >= 0).all() and (d <= 1).all()
    inner = (np.minimum(a, b) > 0.2) & (np.maximum(a, b) < 0.8) & (np.abs(a - b) < 0.1)
    # away from the bounds, SBX children are symmetric about the parents' mean
    np.testing.assert_allclose((c + d)[inner], (a + b)[inner], atol=0.02)


def test_crossover_of_categoricals_takes_a_parent_choice():
    rng = np.random.default_rng(4)
    a, b = SPACE.sample(1000, rng), SPACE.sample(1000, rng)
    c, d = crossover(SPACE, a, b, eta=15.0, rng=rng)
    assert ((c[:, 3] == a[:, 3]) | (c[:, 3] == b[:, 3])).all()
    assert np.sort(np.stack([c[:, 3], d[:, 3]]), 0).tolist() == np.sort(np.stack([a[:, 3], b[:, 3]]), 0).tolist()
