"""The genetic algorithm: it optimises, keeps lineage, ages, resumes exactly and refuses bad tells."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from metalab.errors import ConfigError, MetalabError
from metalab.search import GeneticAlgorithm, SearchSpace, TellError
from metalab.search.base import stack
from metalab.search.problems import ZDT

SPACE = SearchSpace.from_config(
    {
        "x": {"type": "float", "low": -5, "high": 5},
        "y": {"type": "float", "low": 1e-3, "high": 10, "log": True},
        "n": {"type": "int", "low": 0, "high": 9},
        "c": {"type": "categorical", "choices": ["a", "b", "c"]},
    }
)


def score(space, genomes):
    """Maximum 0 at x=1, y=1, n=7, c='b'."""
    values = [space.decode(g) for g in genomes]
    return np.array([-((v["x"] - 1) ** 2) - np.log(v["y"]) ** 2 - abs(v["n"] - 7) - (v["c"] != "b") for v in values])


def run(ga, generations, problem=None):
    for _ in range(generations):
        candidates = ga.ask()
        genomes = stack(candidates)
        ga.tell(candidates, problem.evaluate(genomes) if problem else score(ga.space, genomes))
    return ga


@pytest.mark.parametrize("selection", ["elitist", "aging"])
def test_ga_finds_the_optimum_of_a_mixed_space(selection):
    ga = GeneticAlgorithm(
        SPACE,
        population_size=40,
        selection=selection,
        offspring_size=None if selection == "elitist" else 10,
        sample_size=8,
        mutation_rate=0.5,
        seed=0,
    )
    run(ga, 60)
    best = SPACE.decode(ga.best().genome)
    assert best["n"] == 7 and best["c"] == "b"
    assert ga.best_fitness()[0] > -0.05


def test_elitist_survivors_are_the_top_fraction():
    ga = GeneticAlgorithm(SPACE, population_size=50, survival_fraction=0.2, seed=1)
    first = ga.ask()
    fitness = score(SPACE, stack(first))
    ga.tell(first, fitness)
    assert sorted(c.id for c in ga.population) == sorted(np.argsort(-fitness)[:10].tolist())
    children = ga.ask()
    assert len(children) == 50 and all(set(c.parents) <= {p.id for p in ga.population} for c in children)


def test_aging_removes_the_oldest_not_the_worst():
    ga = GeneticAlgorithm(SPACE, population_size=10, selection="aging", offspring_size=3, sample_size=3, seed=2)
    first = ga.ask()
    ga.tell(first, np.arange(10.0))  # the oldest (id 0) is also the worst; id 2 is third-worst
    children = ga.ask()
    ga.tell(children, np.full(3, -100.0))  # worse than everyone, yet they stay
    assert [c.id for c in ga.population] == list(range(3, 13))


def test_lineage_traces_back_to_the_random_individuals():
    ga = run(GeneticAlgorithm(SPACE, population_size=20, seed=3), 5)
    best = ga.best().id
    frontier, seen = [best], set()
    while frontier:
        node = frontier.pop()
        seen.add(node)
        frontier.extend(ga.lineage[node]["parents"])
    ancestors_at_birth = {ga.lineage[i]["generation"] for i in seen}
    assert 0 in ancestors_at_birth and all(
        not ga.lineage[i]["parents"] for i in seen if ga.lineage[i]["generation"] == 0
    )


@pytest.mark.parametrize("selection, objectives", [("elitist", 1), ("aging", 1), ("elitist", 2)])
def test_resume_from_state_equals_an_uninterrupted_run(selection, objectives):
    problem = ZDT(1, n_variables=6) if objectives == 2 else None
    space = problem.space if problem else SPACE

    def fresh():
        return GeneticAlgorithm(
            space,
            population_size=12,
            selection=selection,
            objectives=objectives,
            offspring_size=6,
            sample_size=4,
            seed=7,
        )

    straight = run(fresh(), 10, problem)
    first_half = run(fresh(), 5, problem)
    saved = pickle.loads(pickle.dumps(first_half.state_dict()))  # what a checkpoint round trip keeps
    resumed = fresh()
    resumed.load_state_dict(saved)
    run(resumed, 5, problem)
    assert [c.id for c in resumed.population] == [c.id for c in straight.population]
    np.testing.assert_array_equal(stack(resumed.population), stack(straight.population))
    np.testing.assert_array_equal(resumed.fitness, straight.fitness)
    assert resumed.lineage == straight.lineage


def test_nsga2_reaches_the_zdt1_front():
    problem = ZDT(1, n_variables=10)
    ga = run(
        GeneticAlgorithm(problem.space, population_size=40, survival_fraction=1.0, objectives=2, seed=0), 60, problem
    )
    assert (
        problem.assess(ga)["hypervolume"] > 0.82
    )  # the true front: 0.8767; 40 points of it: ~0.86; 40 random points: 0.0


def test_nan_fitness_is_discarded_with_a_warning(caplog):
    ga = GeneticAlgorithm(SPACE, population_size=10, survival_fraction=1.0, seed=0)
    candidates = ga.ask()
    fitness = score(SPACE, stack(candidates))
    fitness[[2, 5]] = np.nan
    with caplog.at_level(logging.WARNING, logger="metalab.search.base"):
        ga.tell(candidates, fitness)
    assert "2 candidate(s) with non-finite fitness discarded (ids [2, 5])" in caplog.text
    assert {c.id for c in ga.population} == set(range(10)) - {2, 5}
    run(ga, 2)  # the search goes on


def test_tell_with_the_wrong_count_or_objectives():
    ga = GeneticAlgorithm(SPACE, population_size=10, seed=0)
    candidates = ga.ask()
    with pytest.raises(TellError, match="got 9 fitness values for 10 candidates") as caught:
        ga.tell(candidates, np.zeros(9))
    assert isinstance(caught.value, MetalabError)
    with pytest.raises(TellError, match="got 2 objectives per candidate; this search has 1"):
        ga.tell(candidates, np.zeros((10, 2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"selection": "tournament"}, "selection='tournament' is not allowed"),
        ({"survival_fraction": 0.0}, r"survival_fraction=0.0 is not allowed: survival_fraction must be in \(0, 1\]"),
        ({"population_size": 1}, "population_size must be >= 2"),
        ({"selection": "aging", "sample_size": 50}, r"sample_size must be in \[1, population_size\]"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GeneticAlgorithm(SPACE, population_size=kwargs.pop("population_size", 10), **kwargs)
