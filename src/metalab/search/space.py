"""Typed genes and the search space they form.

A genome is one row of float64 numbers, one slot per gene, in the gene's *internal* coordinates: a
float gene on a log scale is stored as ``log(value)`` so that crossover and mutation act on orders of
magnitude; an int gene holds an integer value; a categorical gene holds the index of its choice. Keeping
every genome a plain numeric row lets a whole population be one ``[n, genes]`` array, and
:meth:`SearchSpace.decode` turns a row back into ``{name: value}`` for whoever evaluates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metalab.errors import ConfigError


@dataclass(frozen=True)
class FloatGene:
    """A real value in ``[low, high]``; ``log=True`` searches ``log(value)`` uniformly (learning rates)."""

    name: str
    low: float
    high: float
    log: bool = False
    kind = "float"

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high)
        if self.log and self.low <= 0:
            raise ConfigError(f"{self.name}.low={self.low!r} is not allowed: a log-scale gene needs low > 0")

    @property
    def internal_bounds(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (float(self.low), float(self.high))

    def decode(self, slot: float) -> float:
        return float(math.exp(slot)) if self.log else float(slot)


@dataclass(frozen=True)
class IntGene:
    """An integer in ``[low, high]`` (both included): layer counts, widths, population sizes."""

    name: str
    low: int
    high: int
    kind = "int"

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high)

    @property
    def internal_bounds(self) -> tuple[float, float]:
        return float(self.low), float(self.high)

    def decode(self, slot: float) -> int:
        return int(round(slot))


@dataclass(frozen=True)
class CategoricalGene:
    """One of a fixed list of choices (an operation, an activation); stored as the choice's index."""

    name: str
    choices: tuple[Any, ...]
    kind = "categorical"

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise ConfigError(f"{self.name}.choices=[] is not allowed: a categorical gene needs at least one choice")
        object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def internal_bounds(self) -> tuple[float, float]:
        return 0.0, float(len(self.choices) - 1)

    def decode(self, slot: float) -> Any:
        return self.choices[int(round(slot))]


Gene = FloatGene | IntGene | CategoricalGene
GENE_TYPES: dict[str, type] = {"float": FloatGene, "int": IntGene, "categorical": CategoricalGene}


def _check_bounds(name: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{name}: bounds [{low!r}, {high!r}] are not allowed: both must be finite numbers")
    if low > high:
        raise ConfigError(f"{name}.low={low!r} > {name}.high={high!r} is not allowed: low must be <= high")


class SearchSpace:
    """An ordered list of genes; samples, clips and decodes ``[n, genes]`` genome arrays."""

    def __init__(self, genes: Sequence[Gene]) -> None:
        if len(genes) == 0:
            raise ConfigError("search space is empty: give at least one gene (float, int or categorical)")
        names = [g.name for g in genes]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"search space genes must have distinct names; repeated: {', '.join(duplicated)}")
        self.genes = tuple(genes)
        bounds = np.array([g.internal_bounds for g in self.genes], dtype=np.float64).reshape(-1, 2)
        self.low, self.high = bounds[:, 0], bounds[:, 1]
        self.kinds = np.array([g.kind for g in self.genes])

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """``{name: {type: float|int|categorical, low:, high:, log:, choices:}}`` -> space (the Hydra form)."""
        if not config:
            raise ConfigError("search space is empty: give at least one gene (float, int or categorical)")
        genes = []
        for name, spec in config.items():
            spec = dict(spec)
            kind = spec.pop("type", None)
            if kind not in GENE_TYPES:
                raise ConfigError(
                    f"{name}.type={kind!r} is not allowed: the gene type must be one of {', '.join(GENE_TYPES)}"
                )
            try:
                genes.append(GENE_TYPES[kind](name=str(name), **spec))
            except TypeError as error:
                raise ConfigError(
                    f"{name}: {error} (keys of a {kind} gene: "
                    f"{', '.join(k for k in GENE_TYPES[kind].__dataclass_fields__ if k != 'name')})"
                ) from None
        return cls(genes)

    @classmethod
    def box(cls, dimension: int, low: float = 0.0, high: float = 1.0, prefix: str = "x") -> SearchSpace:
        """``dimension`` float genes with the same bounds (benchmark problems, flat parameter vectors)."""
        if dimension < 1:
            raise ConfigError(f"dimension={dimension!r} is not allowed: a search space needs at least one gene")
        return cls([FloatGene(f"{prefix}{i}", low, high) for i in range(dimension)])

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` genomes uniform in internal coordinates (log-uniform for log genes, uniform ints/choices)."""
        genomes = rng.uniform(self.low, self.high, size=(n, len(self)))
        discrete = self.kinds != "float"
        genomes[:, discrete] = rng.integers(
            self.low[discrete].astype(np.int64), self.high[discrete].astype(np.int64) + 1, size=(n, int(discrete.sum()))
        )
        return genomes

    def clip(self, genomes: np.ndarray) -> np.ndarray:
        """Back inside the bounds, discrete slots rounded to whole numbers."""
        genomes = np.clip(genomes, self.low, self.high)
        discrete = self.kinds != "float"
        genomes[:, discrete] = np.round(genomes[:, discrete])
        return genomes

    def decode(self, genome: np.ndarray) -> dict[str, Any]:
        """One genome row -> ``{gene name: value}`` in the user's units (exp of log genes, choices)."""
        return {g.name: g.decode(float(slot)) for g, slot in zip(self.genes, genome)}
