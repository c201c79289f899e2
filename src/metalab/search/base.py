"""The ask/tell contract every searcher keeps, and the checks on what a caller tells it.

A searcher proposes candidates (``ask``) and learns from their fitness (``tell``); it never evaluates
anything itself. So the same searcher drives a Hydra run, a sweep, architecture search or a service, and
none of them needs torch to do it: candidates are numpy rows and the state is plain Python and numpy.

Fitness is *maximised*: a higher number is better. A problem that minimises (ZDT) reports the negated
objectives. Multi-objective fitness is a ``[n, objectives]`` array.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from metalab.errors import ConfigError, MetalabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One proposed individual: an id unique within its searcher, its genome row and its parents' ids."""

    id: int
    genome: np.ndarray
    parents: tuple[int, ...] = field(default=())


@runtime_checkable
class Searcher(Protocol):
    """The contract: ``ask`` a population, evaluate it anywhere, ``tell`` the fitnesses back."""

    def ask(self) -> list[Candidate]:
        """The next candidates to evaluate (a whole generation)."""

    def tell(self, candidates: Sequence[Candidate], fitnesses: Any) -> None:
        """Fitness of each asked candidate, in the same order (``[n]`` or ``[n, objectives]``, higher is better)."""

    def best(self) -> Candidate:
        """The searcher's recommended solution: the best individual told (GA; for several objectives the most
        isolated of the first front) or the search distribution's mean (ES)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain Python values and numpy arrays."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` as if never stopped."""


class TellError(MetalabError, ValueError):
    """``tell`` got something that does not match what ``ask`` gave out."""


def stack(candidates: Sequence[Candidate]) -> np.ndarray:
    """``[n, genes]`` genome array of a population (what a batched evaluator takes)."""
    return np.stack([c.genome for c in candidates]) if candidates else np.zeros((0, 0))


def checked_fitness(
    candidates: Sequence[Candidate], fitnesses: Any, objectives: int | None, searcher: str
) -> tuple[list[Candidate], np.ndarray]:
    """Validate a ``tell``; return the candidates with finite fitness and their ``[n, objectives]`` array.

    A wrong count or shape is the caller's bug and raises; a NaN/inf fitness is the evaluation's accident
    (a diverged rollout), so that individual is dropped with a warning and the search goes on.
    """
    values = np.asarray(fitnesses, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != len(candidates):
        raise TellError(
            f"{searcher}.tell got {values.shape[0] if values.ndim else 'a scalar'} fitness values "
            f"for {len(candidates)} candidates: give one value (or one row of objectives) per candidate"
        )
    if objectives is not None and values.shape[1] != objectives:
        raise TellError(f"{searcher}.tell got {values.shape[1]} objectives per candidate; this search has {objectives}")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        dropped = [c.id for c, ok in zip(candidates, finite) if not ok]
        log.warning(
            "%s: %d candidate(s) with non-finite fitness discarded (ids %s)", searcher, len(dropped), dropped[:10]
        )
    return [c for c, ok in zip(candidates, finite) if ok], values[finite]


def require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be > 0")
