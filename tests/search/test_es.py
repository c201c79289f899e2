"""OpenAI-ES and CMA-ES: the gradient estimate against a known quadratic, convergence, resume, bad input."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from metalab.errors import ConfigError
from metalab.search import SearchSpace, TellError
from metalab.search.base import stack
from metalab.search.es import CMAES, OpenAIES, centered_ranks, es_gradient

CENTRE = np.array([0.5, -1.0, 2.0, 0.0, 1.5])


def quadratic(genomes):
    """f(x) = -|x - c|^2; its gradient is -2 (x - c), and Gaussian smoothing leaves that gradient unchanged."""
    return -((genomes - CENTRE) ** 2).sum(axis=1)


def test_gradient_estimate_matches_the_quadratic():
    space = SearchSpace.box(5, -5, 5)
    es = OpenAIES(space, population_size=40000, sigma=0.05, fitness_shaping="none", initial_mean=np.ones(5), seed=0)
    candidates = es.ask()
    es.tell(candidates, quadratic(stack(candidates)))
    true = -2 * (np.ones(5) - CENTRE)
    # antithetic pairs cancel the quadratic term: the estimate is mean_i (grad . eps_i) eps_i, error ~ |g| sqrt(d/n)
    np.testing.assert_allclose(es.last_gradient, true, atol=0.05 * np.linalg.norm(true))


def test_es_gradient_formula_on_a_single_antithetic_pair():
    eps = np.array([[1.0, 2.0], [-1.0, -2.0]])
    weights = np.array([3.0, -1.0])
    np.testing.assert_allclose(es_gradient(eps, weights, sigma=0.5), (3 * eps[0] - eps[1] * -1 * -1) / (2 * 0.5))


def test_centered_ranks():
    np.testing.assert_allclose(centered_ranks(np.array([10.0, -3.0, 7.0, 100.0, 0.0])), [0.25, -0.5, 0.0, 0.5, -0.25])


@pytest.mark.parametrize(
    "make",
    [
        lambda space: OpenAIES(space, population_size=50, sigma=0.1, learning_rate=0.1, seed=0),
        lambda space: CMAES(space, population_size=12, sigma=1.0, seed=0),
    ],
    ids=["openai_es", "cmaes"],
)
def test_es_converges_on_the_quadratic(make):
    es = make(SearchSpace.box(5, -5, 5))
    for _ in range(150):
        candidates = es.ask()
        es.tell(candidates, quadratic(stack(candidates)))
    assert np.linalg.norm(es.best().genome - CENTRE) < 0.1


@pytest.mark.parametrize(
    "make",
    [
        lambda: OpenAIES(SearchSpace.box(4, -3, 3), population_size=8, seed=3),
        lambda: CMAES(SearchSpace.box(4, -3, 3), population_size=6, seed=3),
    ],
    ids=["openai_es", "cmaes"],
)
def test_resume_from_state_equals_an_uninterrupted_run(make):
    def run(es, generations):
        for _ in range(generations):
            candidates = es.ask()
            es.tell(candidates, quadratic(np.pad(stack(candidates), ((0, 0), (0, 1)))))
        return es

    straight = run(make(), 10)
    resumed = make()
    resumed.load_state_dict(pickle.loads(pickle.dumps(run(make(), 4).state_dict())))
    run(resumed, 6)
    np.testing.assert_array_equal(resumed.best().genome, straight.best().genome)
    np.testing.assert_array_equal(stack(resumed.ask()), stack(straight.ask()))


@pytest.mark.parametrize(
    "make",
    [lambda s: OpenAIES(s, population_size=10, seed=0), lambda s: CMAES(s, population_size=10, seed=0)],
    ids=["openai_es", "cmaes"],
)
def test_nan_fitness_is_discarded_and_the_search_goes_on(make, caplog):
    es = make(SearchSpace.box(5, -5, 5))
    candidates = es.ask()
    fitness = quadratic(stack(candidates))
    fitness[3] = np.nan
    with caplog.at_level(logging.WARNING, logger="metalab.search.base"):
        es.tell(candidates, fitness)
    assert "1 candidate(s) with non-finite fitness discarded (ids [3])" in caplog.text
    assert np.isfinite(es.best().genome).all()
    candidates = es.ask()
    es.tell(candidates, quadratic(stack(candidates)))


@pytest.mark.parametrize(
    "make",
    [lambda s: OpenAIES(s, population_size=10), lambda s: CMAES(s, population_size=10)],
    ids=["openai_es", "cmaes"],
)
def test_tell_with_the_wrong_count(make):
    es = make(SearchSpace.box(3, -1, 1))
    with pytest.raises(TellError, match="got 7 fitness values for 10 candidates"):
        es.tell(es.ask(), np.zeros(7))


def test_bad_es_settings():
    with pytest.raises(ConfigError, match="population_size must be even"):
        OpenAIES(SearchSpace.box(3, -1, 1), population_size=7)
    with pytest.raises(ConfigError, match="sigma=0.0 is not allowed"):
        CMAES(SearchSpace.box(3, -1, 1), sigma=0.0)
