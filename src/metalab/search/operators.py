"""Crossover and mutation per gene type, on whole ``[n, genes]`` genome arrays.

- float genes: simulated binary crossover (SBX) and polynomial mutation, the bounded forms of Deb and
  Agrawal (1995) and Deb (2001) that NSGA-II uses; ``eta`` sets how close children stay to parents.
- int genes: the same two operators, then rounded: an integer gene is ordinal (3 layers is nearer 4
  than 8), so a child should land between or near its parents.
- categorical genes: uniform crossover (each child takes either parent's choice) and mutation that
  resamples a *different* choice; the index order means nothing, so no arithmetic on it.
"""

from __future__ import annotations

import numpy as np

from metalab.search.space import SearchSpace

_TINY = 1e-14


def sbx_crossover(
    first: np.ndarray,
    second: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    eta: float,
    rng: np.random.Generator,
    gene_probability: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Two ``[n, genes]`` child arrays from parent arrays of the same shape (bounded SBX).

    Each gene is crossed with ``gene_probability``; a crossed gene's children are spread around the
    parents' mean by a factor drawn so that the spread distribution stays inside ``[low, high]``.
    """
    first, second = first.copy(), second.copy()
    smaller, larger = np.minimum(first, second), np.maximum(first, second)
    gap = larger - smaller
    cross = (rng.random(first.shape) < gene_probability) & (gap > _TINY)
    u = rng.random(first.shape)
    safe_gap = np.where(gap > _TINY, gap, 1.0)

    def spread(distance_to_bound: np.ndarray) -> np.ndarray:
        beta = 1.0 + 2.0 * distance_to_bound / safe_gap
        alpha = 2.0 - beta ** -(eta + 1.0)
        inside = u <= 1.0 / alpha
        return np.where(
            inside,
            (u * alpha) ** (1.0 / (eta + 1.0)),
            (1.0 / np.maximum(2.0 - u * alpha, _TINY)) ** (1.0 / (eta + 1.0)),
        )

    low_child = 0.5 * (smaller + larger - spread(smaller - low) * gap)
    high_child = 0.5 * (smaller + larger + spread(high - larger) * gap)
    low_child, high_child = np.clip(low_child, low, high), np.clip(high_child, low, high)
    swap = rng.random(first.shape) < 0.5  # which child gets the lower value: no bias towards either parent
    child_a = np.where(swap, high_child, low_child)
    child_b = np.where(swap, low_child, high_child)
    return np.where(cross, child_a, first), np.where(cross, child_b, second)


def polynomial_mutation(
    genomes: np.ndarray, low: np.ndarray, high: np.ndarray, eta: float, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Each gene moves with probability ``rate`` by a bounded polynomial perturbation (Deb 2001)."""
    span = np.where(high > low, high - low, 1.0)
    mutate = (rng.random(genomes.shape) < rate) & (high > low)
    u = rng.random(genomes.shape)
    to_low, to_high = (genomes - low) / span, (high - genomes) / span
    power = 1.0 / (eta + 1.0)
    down = (2.0 * u + (1.0 - 2.0 * u) * (1.0 - to_low) ** (eta + 1.0)) ** power - 1.0
    up = 1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - to_high) ** (eta + 1.0)) ** power
    delta = np.where(u < 0.5, down, up)
    return np.where(mutate, np.clip(genomes + delta * span, low, high), genomes)


def resample_choices(
    genomes: np.ndarray, columns: np.ndarray, n_choices: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Categorical mutation: with probability ``rate`` a slot takes one of the *other* choices, uniformly."""
    genomes = genomes.copy()
    for column, count in zip(columns, n_choices):
        if count < 2:
            continue
        mutate = rng.random(len(genomes)) < rate
        shift = rng.integers(1, count, size=int(mutate.sum()))  # 1..count-1: never the current choice
        genomes[mutate, column] = (genomes[mutate, column] + shift) % count
    return genomes


def crossover(
    space: SearchSpace, first: np.ndarray, second: np.ndarray, eta: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Children of parent arrays, each gene by its type's operator."""
    child_a, child_b = sbx_crossover(first, second, space.low, space.high, eta, rng)
    categorical = space.kinds == "categorical"
    if categorical.any():
        take_first = rng.random((len(first), int(categorical.sum()))) < 0.5
        child_a[:, categorical] = np.where(take_first, first[:, categorical], second[:, categorical])
        child_b[:, categorical] = np.where(take_first, second[:, categorical], first[:, categorical])
    return space.clip(child_a), space.clip(child_b)


def integer_mutation(
    genomes: np.ndarray, low: np.ndarray, high: np.ndarray, eta: float, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Polynomial mutation rounded to whole steps; a selected gene always moves by at least one step
    (a perturbation that rounds back to the same integer would make small int ranges never mutate)."""
    selected = (rng.random(genomes.shape) < rate) & (high > low)
    step = np.round(polynomial_mutation(genomes, low, high, eta, 1.0, rng) - genomes)
    direction = np.where(rng.random(genomes.shape) < 0.5, -1.0, 1.0)
    step = np.where(step == 0, direction, step)
    moved = genomes + step
    moved = np.where((moved < low) | (moved > high), genomes - step, moved)  # at a bound: go the other way
    return np.where(selected, np.clip(moved, low, high), genomes)


def mutate(space: SearchSpace, genomes: np.ndarray, eta: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Mutated copy of ``genomes``: polynomial for float genes, whole steps for int genes, resampling
    for categorical ones."""
    categorical, integer = space.kinds == "categorical", space.kinds == "int"
    mutated = polynomial_mutation(genomes, space.low, space.high, eta, rate, rng)
    mutated[:, categorical] = genomes[:, categorical]
    if integer.any():
        mutated[:, integer] = integer_mutation(
            genomes[:, integer], space.low[integer], space.high[integer], eta, rate, rng
        )
    if categorical.any():
        columns = np.flatnonzero(categorical)
        mutated = resample_choices(mutated, columns, (space.high[columns] + 1).astype(np.int64), rate, rng)
    return space.clip(mutated)
