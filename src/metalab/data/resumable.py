"""Training loaders that remember how far into the epoch they got, so a run resumed mid-epoch continues.

A run stopped by ``max_steps``, ``max_time`` or a signal usually stops inside an epoch. Lightning saves
the state of a training loader that has ``state_dict``/``load_state_dict`` in the checkpoint and gives it
back on resume; :class:`ResumableDataLoader` stores the number of batches it has served in the current
pass and, when restored, tells its sampler to start that many items later. The samplers here are pure
functions of (seed, epoch), so skipping is exact and costs nothing: no batch is loaded to be thrown away.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader


@runtime_checkable
class SkippableSampler(Protocol):
    """A sampler whose next pass can start ``n`` items in (indices for a sampler, batches for a batch sampler)."""

    def skip_next(self, n: int) -> None: ...


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position in the current pass goes into checkpoints (see the module docstring).

    Its sampler (``sampler=``, skipped by ``batches * batch_size`` indices) or batch sampler
    (``batch_sampler=``, skipped by batches) is a :class:`SkippableSampler`. Lightning re-creates the
    loader with a sampler of its own under DDP (a ``DistributedSampler``, which cannot skip): that loader
    still works, and a pass it had begun restarts from its first batch on resume (with a warning).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.can_skip = isinstance(self.batch_sampler, SkippableSampler) or isinstance(self.sampler, SkippableSampler)
        self.batches_served = 0
        self._resume_after = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches_served": self.batches_served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_after = int(state.get("batches_served", 0))

    def __iter__(self) -> Iterator[Any]:
        return self._served(self._take_resume_point())

    def _take_resume_point(self) -> int:
        """Batches of this pass already trained on; a pass that was served whole starts afresh."""
        skip, self._resume_after = self._resume_after, 0
        if not 0 < skip < len(self):
            return 0
        if not self.can_skip:
            warnings.warn(
                f"this loader's sampler ({type(self.sampler).__name__}) cannot skip: the pass that was "
                f"{skip} batches in restarts from its first batch",
                stacklevel=2,
            )
            return 0
        if isinstance(self.batch_sampler, SkippableSampler):
            self.batch_sampler.skip_next(skip)
        else:
            self.sampler.skip_next(skip * self.batch_size)
        return skip

    def _served(self, skip: int) -> Iterator[Any]:
        self.batches_served = skip
        for batch in super().__iter__():
            self.batches_served += 1
            yield batch
