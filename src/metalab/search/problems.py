"""What a search is run on: the :class:`Problem` contract and the ZDT benchmark problems.

A problem owns the search space, scores a whole population in one call (``evaluate`` takes the
``[n, genes]`` genome array, so it can batch) and, at the end of a run, ``assess``es the searcher's
result with the figures a report needs (hypervolume for ZDT, mean return over evaluation episodes for
a policy). ``seed`` makes noisy evaluations reproducible and resumable: it is derived from the run's
seed and the generation, never from global random state.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from metalab.errors import ConfigError
from metalab.search.pareto import hypervolume_2d
from metalab.search.space import SearchSpace


@runtime_checkable
class Problem(Protocol):
    space: SearchSpace
    objectives: int

    def evaluate(self, genomes: np.ndarray, seed: int) -> np.ndarray:
        """Fitness of each genome row, higher is better: ``[n]`` or ``[n, objectives]``."""

    def assess(self, searcher: Any, seed: int) -> dict[str, float]:
        """Final figures of a finished search (logged under ``test/``)."""


class ZDT:
    """Zitzler, Deb and Thiele (2000) two-objective problems, both objectives minimised, ``x`` in
    ``[0, 1]^n``; the Pareto front lies at ``x_2 .. x_n = 0`` (g = 1). ``variant`` is 1, 2 or 3:
    ZDT1 has a convex front, ZDT2 a concave one, ZDT3 five disconnected pieces."""

    objectives = 2

    def __init__(self, variant: int = 1, n_variables: int = 30, reference: tuple[float, float] = (1.1, 1.1)) -> None:
        if variant not in (1, 2, 3):
            raise ConfigError(f"variant={variant!r} is not allowed: ZDT variant must be 1, 2 or 3")
        if n_variables < 2:
            raise ConfigError(f"n_variables={n_variables!r} is not allowed: ZDT needs at least 2 variables")
        reference = list(reference)
        if len(reference) != 2 or not all(isinstance(r, (int, float)) and math.isfinite(r) for r in reference):
            raise ConfigError(
                f"reference={reference!r} is not allowed: reference must be 2 finite numbers "
                "(the hypervolume's reference point (f1, f2), e.g. [1.1, 1.1])"
            )
        self.variant, self.n_variables = variant, n_variables
        self.reference = tuple(float(r) for r in reference)
        self.space = SearchSpace.box(n_variables, 0.0, 1.0)

    def objective_values(self, genomes: np.ndarray) -> np.ndarray:
        """``[n, 2]`` minimised objectives (f1, f2)."""
        first = genomes[:, 0]
        g = 1.0 + 9.0 * genomes[:, 1:].sum(axis=1) / (self.n_variables - 1)
        ratio = first / g
        if self.variant == 1:
            h = 1.0 - np.sqrt(ratio)
        elif self.variant == 2:
            h = 1.0 - ratio**2
        else:
            h = 1.0 - np.sqrt(ratio) - ratio * np.sin(10.0 * np.pi * first)
        return np.stack([first, g * h], axis=1)

    def evaluate(self, genomes: np.ndarray, seed: int = 0) -> np.ndarray:
        return -self.objective_values(genomes)

    def true_front(self, points: int = 1000) -> np.ndarray:
        """Minimised objectives along the analytic Pareto front (g = 1), for plots."""
        first = np.linspace(0.0, 1.0, points)
        genomes = np.zeros((points, self.n_variables))
        genomes[:, 0] = first
        values = self.objective_values(genomes)
        if self.variant == 3:  # only the non-dominated pieces of the g = 1 curve form ZDT3's front
            from metalab.search.pareto import non_dominated_fronts

            values = values[np.sort(non_dominated_fronts(-values)[0])]
        return values

    def assess(self, searcher: Any, seed: int = 0) -> dict[str, float]:
        _, fitness = searcher.pareto_front()
        return {"hypervolume": hypervolume_2d(-fitness, self.reference), "front_size": float(len(fitness))}
