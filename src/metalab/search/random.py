"""Random search behind the ask/tell contract: every candidate drawn uniformly from the space.

The baseline every architecture-search claim is judged against (Li and Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", UAI 2019): same space, same fitness, same number of
evaluations as the searcher it is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metalab.errors import ConfigError
from metalab.search.base import Candidate, checked_fitness
from metalab.search.space import SearchSpace


class RandomSearch:
    """``batch_size`` uniform samples per ask; :meth:`best` is the best one told."""

    def __init__(self, space: SearchSpace, batch_size: int = 4, seed: int = 0) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is not allowed: batch_size must be >= 1")
        self.space, self.batch_size = space, batch_size
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.told = 0
        self._best: tuple[Candidate, float] | None = None

    def ask(self) -> list[Candidate]:
        genomes = self.space.sample(self.batch_size, self.rng)
        candidates = [Candidate(self.next_id + i, genome) for i, genome in enumerate(genomes)]
        self.next_id += len(candidates)
        return candidates

    def tell(self, candidates: Sequence[Candidate], fitnesses: Any) -> None:
        kept, values = checked_fitness(candidates, fitnesses, 1, "RandomSearch")
        self.told += len(candidates)
        if len(kept):
            top = int(np.argmax(values[:, 0]))
            if self._best is None or values[top, 0] > self._best[1]:
                self._best = (kept[top], float(values[top, 0]))

    def best(self) -> Candidate:
        if self._best is None:
            raise ConfigError("RandomSearch.best: nothing has been told yet; call ask and tell first")
        return self._best[0]

    def state_dict(self) -> dict[str, Any]:
        best = (
            None
            if self._best is None
            else {"id": self._best[0].id, "genome": self._best[0].genome.copy(), "fitness": self._best[1]}
        )
        return {"rng": self.rng.bit_generator.state, "next_id": self.next_id, "told": self.told, "best": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.next_id, self.told = int(state["next_id"]), int(state["told"])
        best = state["best"]
        self._best = (
            None if best is None else (Candidate(int(best["id"]), np.asarray(best["genome"])), float(best["fitness"]))
        )
