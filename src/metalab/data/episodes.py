"""Seeded N-way K-shot Q-query episodes.

An episode is a dict of tensors (a DataLoader stacks several into a meta-batch with a leading task
axis):

- ``support``: ``"(way shot) c h w"``, class-major: the first ``shot`` images are class 0, and so on;
- ``support_labels``: ``"(way shot)"`` in ``0..way-1``;
- ``query`` / ``query_labels``: the same with ``query`` images per class.

Episode ``i`` of a stream is a pure function of ``(seed, stream, i)``: it does not depend on global
RNG state, on the DataLoader worker that drew it or on what was drawn before. That makes runs
reproducible and a resumed run sees exactly the episodes an uninterrupted one would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from metalab.errors import ConfigError


class EpisodeSource(Protocol):
    """What an episode is drawn from: a pool of classes with equally many examples each."""

    name: str

    @property
    def num_classes(self) -> int: ...

    @property
    def examples_per_class(self) -> int: ...

    def gather(self, classes: torch.Tensor, examples: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class EpisodeSpec:
    """Shape of an episode: ``way`` classes, ``shot`` support and ``query`` query examples per class."""

    way: int
    shot: int
    query: int

    @property
    def name(self) -> str:
        return f"{self.way}w{self.shot}s"

    def validate(self, source: EpisodeSource, key: str) -> None:
        """Raise a :class:`ConfigError` naming ``key`` if this episode cannot be drawn from ``source``."""
        if self.way < 2:
            raise ConfigError(f"{key}.way={self.way} is not allowed: must be >= 2")
        if self.way > source.num_classes:
            raise ConfigError(
                f"{key}.way={self.way} is not allowed: must be <= {source.num_classes}, "
                f"the number of classes in split {source.name!r}"
            )
        if self.shot < 1:
            raise ConfigError(f"{key}.shot={self.shot} is not allowed: must be >= 1")
        if self.query < 1:
            raise ConfigError(f"{key}.query={self.query} is not allowed: must be >= 1")
        if self.shot + self.query > source.examples_per_class:
            raise ConfigError(
                f"{key}.shot + {key}.query = {self.shot + self.query} is not allowed: must be <= "
                f"{source.examples_per_class}, the examples per class in split {source.name!r}"
            )


def episode_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A torch generator determined by (seed, stream, index) alone, well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_episode(source: EpisodeSource, spec: EpisodeSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw one episode (classes and examples without replacement) and remap labels to 0..way-1."""
    classes = torch.randperm(source.num_classes, generator=gen)[: spec.way]
    n = spec.shot + spec.query
    examples = torch.rand(spec.way, source.examples_per_class, generator=gen).argsort(dim=1)[:, :n]
    images = source.gather(classes, examples)  # "way n c h w"
    labels = torch.arange(spec.way)
    return {
        "support": images[:, : spec.shot].flatten(0, 1),
        "support_labels": labels.repeat_interleave(spec.shot),
        "query": images[:, spec.shot :].flatten(0, 1),
        "query_labels": labels.repeat_interleave(spec.query),
    }


class EpisodeDataset(Dataset):
    """Episode ``i`` of stream ``stream`` (indices may exceed ``len``: epoch ``e`` uses ``e*len + j``)."""

    def __init__(self, source: EpisodeSource, spec: EpisodeSpec, episodes: int, seed: int, stream: int) -> None:
        self.source, self.spec, self.episodes, self.seed, self.stream = source, spec, episodes, seed, stream

    def __len__(self) -> int:
        return self.episodes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return sample_episode(self.source, self.spec, episode_generator(self.seed, self.stream, index))


class EpochEpisodeSampler(Sampler[int]):
    """Yields ``epoch * n + j`` for ``j < n``: fresh episodes every epoch, chosen by the epoch number.

    Lightning calls ``set_epoch`` before each epoch (also after resuming), so epoch ``e`` always draws
    the same episodes, however the run got there.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self._skip = n, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, n: int) -> None:
        """Start the next pass ``n`` episodes in (a run resumed mid-epoch, ``metalab.data.resumable``)."""
        self._skip = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(range(self.epoch * self.n + skip, (self.epoch + 1) * self.n))
