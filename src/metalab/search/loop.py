"""One generation of any searcher on any problem: the step a Lightning shell, a benchmark or a service repeats."""

from __future__ import annotations

import numpy as np

from metalab.search.base import Searcher, stack
from metalab.search.problems import Problem


def evaluation_seed(seed: int, generation: int) -> int:
    """The seed of a generation's noisy evaluations: a function of the run's seed and the generation only,
    so a resumed run draws exactly the episodes the uninterrupted one would have."""
    return (seed * 1_000_003 + generation * 7919) % (2**31 - 1)


def run_generation(searcher: Searcher, problem: Problem, seed: int, generation: int) -> dict[str, float]:
    """ask -> evaluate the whole population in one call -> tell; returns the generation's fitness summary
    (per objective when there are several; NaN fitness is left out of the summary as it is of the search)."""
    candidates = searcher.ask()
    fitness = np.asarray(problem.evaluate(stack(candidates), seed=evaluation_seed(seed, generation)), dtype=np.float64)
    searcher.tell(candidates, fitness)
    fitness = fitness.reshape(len(candidates), -1)
    finite = fitness[np.isfinite(fitness).all(axis=1)]
    summary: dict[str, float] = {"evaluations": float(len(candidates))}
    for k in range(fitness.shape[1]):
        suffix = "" if fitness.shape[1] == 1 else f"_{k}"
        summary[f"best_fitness{suffix}"] = float(finite[:, k].max()) if len(finite) else float("nan")
        summary[f"mean_fitness{suffix}"] = float(finite[:, k].mean()) if len(finite) else float("nan")
    return summary
