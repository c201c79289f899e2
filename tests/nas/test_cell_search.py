"""Regularized evolution and random search over cells: aging removes the oldest cell whatever its
fitness, children are cells of the space, random search keeps the best it was told and resumes exactly."""

from __future__ import annotations

import numpy as np

from metalab.nas.space import Genotype, search_space
from metalab.search.base import stack
from metalab.search.ga import GeneticAlgorithm
from metalab.search.random import RandomSearch


def conv3x3_count(genomes: np.ndarray) -> np.ndarray:
    return np.array([Genotype.from_indices(g).count("nor_conv_3x3") for g in genomes], dtype=float)


def test_aging_over_cells_removes_the_oldest_even_when_it_is_the_fittest():
    ga = GeneticAlgorithm(
        search_space(),
        population_size=4,
        selection="aging",
        sample_size=2,
        offspring_size=2,
        crossover_probability=0.0,
        mutation_rate=0.3,
        seed=0,
    )
    first = ga.ask()
    ga.tell(first, [100.0, 1.0, 2.0, 3.0])  # the oldest (id 0) is by far the fittest
    children = ga.ask()
    assert all(isinstance(Genotype.from_indices(c.genome), Genotype) for c in children)
    ga.tell(children, [0.0, 0.0])
    assert [c.id for c in ga.population] == [2, 3, 4, 5]  # ids 0 and 1, the two oldest, died
    assert ga.best().id == 0  # the best ever told is still remembered


def test_random_search_keeps_the_best_told_and_resumes_exactly():
    searcher = RandomSearch(search_space(), batch_size=5, seed=3)
    told: list[tuple[np.ndarray, float]] = []
    for _ in range(3):
        candidates = searcher.ask()
        fitness = conv3x3_count(stack(candidates)) + 0.01 * np.arange(5)  # ties broken, one clear best
        searcher.tell(candidates, fitness)
        told += list(zip(stack(candidates), fitness))
    best_genome = max(told, key=lambda pair: pair[1])[0]
    assert np.array_equal(searcher.best().genome, best_genome) and searcher.told == 15
    state = searcher.state_dict()
    after = searcher.ask()
    again = RandomSearch(search_space(), batch_size=5, seed=99)
    again.load_state_dict(state)
    assert np.array_equal(stack(again.ask()), stack(after))
    assert np.array_equal(again.best().genome, best_genome)
