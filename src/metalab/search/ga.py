"""A genetic algorithm over a typed search space: elitist top-fraction survival or aging, one or more
objectives, lineage recorded.

Two ways to choose who lives on (``selection``):

- ``"elitist"``: after each generation the best ``survival_fraction`` of the population (survivors and
  children together) survive and parent the next generation, picked by binary tournament. One
  objective orders by fitness; several by non-dominated front and crowding distance. With
  ``survival_fraction=1`` and as many children as the population this is NSGA-II (Deb et al. 2002):
  parents and children merged, the best ``population_size`` kept.
- ``"aging"``: regularized evolution (Real et al. 2019). The population is a queue of the last
  ``population_size`` individuals told; each child's parent is the best of ``sample_size`` members
  drawn at random, and the *oldest* individual dies, whatever its fitness. Architecture search uses it:
  aging keeps a lucky, noisily-evaluated individual from ruling forever.

Every individual gets an id; :attr:`GeneticAlgorithm.lineage` maps it to its parents' ids and its
generation, so a result can be traced back to the random individuals it came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from metalab.errors import ConfigError
from metalab.search.base import Candidate, checked_fitness, stack
from metalab.search.operators import crossover, mutate
from metalab.search.pareto import non_dominated_fronts, rank_order, select_survivors
from metalab.search.space import SearchSpace

SELECTIONS = ("elitist", "aging")


class GeneticAlgorithm:
    """Ask/tell genetic algorithm (see the module docstring for the two selection schemes)."""

    def __init__(
        self,
        space: SearchSpace,
        population_size: int = 100,
        survival_fraction: float = 0.2,
        selection: str = "elitist",
        objectives: int = 1,
        offspring_size: int | None = None,
        crossover_probability: float = 0.9,
        mutation_rate: float | None = None,
        crossover_eta: float = 15.0,
        mutation_eta: float = 20.0,
        sample_size: int = 10,
        seed: int = 0,
    ) -> None:
        if selection not in SELECTIONS:
            raise ConfigError(
                f"selection={selection!r} is not allowed: selection must be one of {', '.join(SELECTIONS)}"
            )
        if population_size < 2:
            raise ConfigError(f"population_size={population_size!r} is not allowed: population_size must be >= 2")
        if not 0 < survival_fraction <= 1:
            raise ConfigError(
                f"survival_fraction={survival_fraction!r} is not allowed: survival_fraction must be in (0, 1]"
            )
        if objectives < 1:
            raise ConfigError(f"objectives={objectives!r} is not allowed: objectives must be >= 1")
        if not 0 <= crossover_probability <= 1:
            raise ConfigError(f"crossover_probability={crossover_probability!r} is not allowed: it must be in [0, 1]")
        if mutation_rate is not None and not 0 <= mutation_rate <= 1:
            raise ConfigError(
                f"mutation_rate={mutation_rate!r} is not allowed: mutation_rate must be in [0, 1] "
                "(the probability that a gene mutates) or null (1 / number of genes)"
            )
        for name, eta in (("crossover_eta", crossover_eta), ("mutation_eta", mutation_eta)):
            if not (math.isfinite(eta) and eta >= 0):  # SBX / polynomial mutation raise u to 1 / (eta + 1)
                raise ConfigError(
                    f"{name}={eta!r} is not allowed: {name} must be a finite number >= 0 "
                    "(the distribution index: larger keeps children closer to their parents)"
                )
        if offspring_size is not None and offspring_size < 1:
            raise ConfigError(
                f"offspring_size={offspring_size!r} is not allowed: offspring_size must be >= 1 "
                "or null (population_size children per generation)"
            )
        if selection == "aging" and not 1 <= sample_size <= population_size:
            raise ConfigError(
                f"sample_size={sample_size!r} is not allowed: sample_size must be in [1, population_size]"
            )
        self.space = space
        self.population_size = population_size
        self.survivor_count = max(1, round(survival_fraction * population_size))
        self.selection = selection
        self.objectives = objectives
        self.offspring_size = offspring_size or population_size
        self.crossover_probability = crossover_probability
        self.mutation_rate = mutation_rate if mutation_rate is not None else 1.0 / len(space)
        self.crossover_eta, self.mutation_eta = crossover_eta, mutation_eta
        self.sample_size = sample_size
        self.rng = np.random.default_rng(seed)
        self.generation = 0
        self.next_id = 0
        self.population: list[Candidate] = []  # survivors (elitist) or the age queue, oldest first (aging)
        self.fitness = np.zeros((0, objectives))  # their fitness, same order
        self.lineage: dict[int, dict[str, Any]] = {}  # id -> {"parents": [...], "generation": g}
        self._best: tuple[Candidate, np.ndarray] | None = None  # best single-objective individual ever told

    # ----------------------------------------------------------------------------------------- ask
    def ask(self) -> list[Candidate]:
        """Random individuals until a population has been told; children of the population after that."""
        if len(self.population) == 0:
            genomes = self.space.sample(self.population_size, self.rng)
            return self._new_candidates(genomes, [()] * len(genomes))
        children, parents = self._breed(self.offspring_size)
        return self._new_candidates(children, parents)

    def _breed(self, count: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        pairs = math.ceil(count / 2)
        first, second = self._pick_parents(pairs), self._pick_parents(pairs)
        genomes = stack(self.population)
        child_a, child_b = genomes[first].copy(), genomes[second].copy()
        crossed = self.rng.random(pairs) < self.crossover_probability
        if crossed.any():
            a, b = crossover(self.space, child_a[crossed], child_b[crossed], self.crossover_eta, self.rng)
            child_a[crossed], child_b[crossed] = a, b
        children = np.concatenate([child_a, child_b])[:count]
        children = mutate(self.space, children, self.mutation_eta, self.mutation_rate, self.rng)
        ids = np.array([c.id for c in self.population])
        parent_ids = []
        for i in range(count):
            pair = i % pairs
            if crossed[pair]:
                parent_ids.append((int(ids[first[pair]]), int(ids[second[pair]])))
            else:
                parent_ids.append((int(ids[(first if i < pairs else second)[pair]]),))
        return children, parent_ids

    def _pick_parents(self, count: int) -> np.ndarray:
        """Indices into the population. Elitist: binary tournament on survival rank (population is kept
        sorted best first, so the lower index wins). Aging: best of ``sample_size`` random members."""
        size = len(self.population)
        if self.selection == "elitist":
            return self.rng.integers(0, size, size=(count, 2)).min(axis=1)
        samples = np.stack(
            [self.rng.choice(size, size=min(self.sample_size, size), replace=False) for _ in range(count)]
        )
        winners = np.empty(count, dtype=np.int64)
        for row, sample in enumerate(samples):
            winners[row] = sample[rank_order(self.fitness[sample])[0]]
        return winners

    def _new_candidates(self, genomes: np.ndarray, parents: Sequence[tuple[int, ...]]) -> list[Candidate]:
        candidates = []
        for genome, parent_ids in zip(genomes, parents):
            candidates.append(Candidate(self.next_id, genome, tuple(parent_ids)))
            self.lineage[self.next_id] = {"parents": list(parent_ids), "generation": self.generation}
            self.next_id += 1
        return candidates

    # ---------------------------------------------------------------------------------------- tell
    def tell(self, candidates: Sequence[Candidate], fitnesses: Any) -> None:
        """Merge the evaluated candidates into the population; NaN fitness drops that individual."""
        kept, values = checked_fitness(candidates, fitnesses, self.objectives, "GeneticAlgorithm")
        self._remember_best(kept, values)
        population = self.population + kept
        fitness = np.concatenate([self.fitness, values])
        if self.selection == "elitist":
            order = select_survivors(fitness, self.survivor_count)
        else:  # aging: drop the oldest beyond population_size, keep arrival order
            order = np.arange(max(0, len(population) - self.population_size), len(population))
        self.population = [population[i] for i in order]
        self.fitness = fitness[order]
        self.generation += 1

    def _remember_best(self, candidates: list[Candidate], values: np.ndarray) -> None:
        if self.objectives != 1 or len(candidates) == 0:
            return
        top = int(np.argmax(values[:, 0]))
        if self._best is None or values[top, 0] > self._best[1][0]:
            self._best = (candidates[top], values[top])

    # ------------------------------------------------------------------------------------- results
    def best(self) -> Candidate:
        """Best individual told so far (one objective); for several, the most isolated of the first front."""
        if self.objectives == 1 and self._best is not None:
            return self._best[0]
        if not self.population:
            raise ConfigError("GeneticAlgorithm.best: nothing has been told yet; call ask and tell first")
        return self.population[int(rank_order(self.fitness)[0])]

    def best_fitness(self) -> np.ndarray:
        if self.objectives == 1 and self._best is not None:
            return self._best[1]
        return self.fitness[int(rank_order(self.fitness)[0])]

    def pareto_front(self) -> tuple[list[Candidate], np.ndarray]:
        """The non-dominated individuals of the current population and their fitness."""
        front = non_dominated_fronts(self.fitness)[0] if len(self.fitness) else np.zeros(0, dtype=np.int64)
        return [self.population[i] for i in front], self.fitness[front]

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "generation": self.generation,
            "next_id": self.next_id,
            "population": {
                "ids": [c.id for c in self.population],
                "parents": [list(c.parents) for c in self.population],
                "genomes": stack(self.population).copy(),
                "fitness": self.fitness.copy(),
            },
            "lineage": {k: dict(v) for k, v in self.lineage.items()},
            "best": None
            if self._best is None
            else {
                "id": self._best[0].id,
                "parents": list(self._best[0].parents),
                "genome": self._best[0].genome.copy(),
                "fitness": self._best[1].copy(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.generation, self.next_id = int(state["generation"]), int(state["next_id"])
        saved = state["population"]
        self.population = [
            Candidate(int(i), np.asarray(g, dtype=np.float64), tuple(p))
            for i, g, p in zip(saved["ids"], saved["genomes"], saved["parents"])
        ]
        self.fitness = np.asarray(saved["fitness"], dtype=np.float64).reshape(-1, self.objectives)
        self.lineage = {int(k): dict(v) for k, v in state["lineage"].items()}
        best = state["best"]
        self._best = (
            None
            if best is None
            else (
                Candidate(int(best["id"]), np.asarray(best["genome"]), tuple(best["parents"])),
                np.asarray(best["fitness"]),
            )
        )
