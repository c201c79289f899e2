"""A LightningDataModule of few-shot episodes over any class pool (Omniglot today).

Training, validation and test episodes have their own shapes: ProtoNets train with more ways than
they test (Snell et al. 2017), and one model is tested on several shapes (5-way and 20-way), each a
named test DataLoader. Test episodes are drawn with ``eval_seed``, independent of the run's seed, so
every model is tested on the very same episodes.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from metalab.data.episodes import EpisodeDataset, EpisodeSource, EpisodeSpec, EpochEpisodeSampler
from metalab.data.resumable import ResumableDataLoader
from metalab.errors import ConfigError

TRAIN_STREAM, VAL_STREAM = 0, 1


class FewShotDataModule(L.LightningDataModule):
    """Episodes from ``pools()`` (a callable returning ``{"train", "val", "test"}`` class pools)."""

    def __init__(
        self,
        pools: Callable[[], Mapping[str, EpisodeSource]],
        train: Mapping[str, int],
        val: Mapping[str, int],
        test: list[str],
        test_query: int = 15,
        train_episodes: int = 100,
        val_episodes: int = 100,
        test_episodes: int = 1000,
        tasks_per_batch: int = 1,
        eval_tasks_per_batch: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        self.pools_fn = pools
        self.train_spec = _spec(train, "data.train")
        self.val_spec = _spec(val, "data.val")
        if not test:
            raise ConfigError("data.test=[] is not allowed: must name at least one test shape such as 5w1s")
        self.test_specs = {spec.name: spec for spec in (parse_shape(n, test_query, "data.test") for n in test)}
        for key, value in {
            "data.train_episodes": train_episodes,
            "data.val_episodes": val_episodes,
            "data.test_episodes": test_episodes,
            "data.tasks_per_batch": tasks_per_batch,
            "data.eval_tasks_per_batch": eval_tasks_per_batch,
        }.items():
            if value < 1:
                raise ConfigError(f"{key}={value} is not allowed: must be >= 1")
        self.train_episodes, self.val_episodes, self.test_episodes = train_episodes, val_episodes, test_episodes
        self.tasks_per_batch, self.eval_tasks_per_batch = tasks_per_batch, eval_tasks_per_batch
        self.num_workers, self.seed, self.eval_seed = num_workers, seed, eval_seed
        self.pools: Mapping[str, EpisodeSource] | None = None

    @property
    def test_names(self) -> list[str]:
        return list(self.test_specs)

    def setup(self, stage: str | None = None) -> None:
        """Load the pools once and check that every episode shape can be drawn from its split."""
        if self.pools is None:
            self.pools = self.pools_fn()
            self.train_spec.validate(self.pools["train"], "data.train")
            self.val_spec.validate(self.pools["val"], "data.val")
            for name, spec in self.test_specs.items():
                spec.validate(self.pools["test"], f"data.test[{name}]")

    def train_dataloader(self) -> DataLoader:
        ds = EpisodeDataset(
            self.pools["train"], self.train_spec, self.train_episodes * self.tasks_per_batch, self.seed, TRAIN_STREAM
        )
        return self._loader(ds, self.tasks_per_batch, EpochEpisodeSampler(len(ds)), loader=ResumableDataLoader)

    def val_dataloader(self) -> DataLoader:
        ds = EpisodeDataset(self.pools["val"], self.val_spec, self.val_episodes, self.eval_seed, VAL_STREAM)
        return self._loader(ds, self.eval_tasks_per_batch)

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(
                EpisodeDataset(self.pools["test"], spec, self.test_episodes, self.eval_seed, _stream_id(name)),
                self.eval_tasks_per_batch,
            )
            for name, spec in self.test_specs.items()
        ]

    def _loader(
        self, ds: EpisodeDataset, batch: int, sampler: Any = None, loader: type[DataLoader] = DataLoader
    ) -> DataLoader:
        return loader(
            ds,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


def _spec(cfg: Mapping[str, int], key: str) -> EpisodeSpec:
    try:
        return EpisodeSpec(way=int(cfg["way"]), shot=int(cfg["shot"]), query=int(cfg["query"]))
    except KeyError as missing:
        raise ConfigError(f"{key} must set way, shot and query; {missing} is missing") from None


def parse_shape(name: str, query: int, key: str) -> EpisodeSpec:
    """``"20w5s"`` -> 20-way 5-shot with ``query`` queries per class."""
    match = re.fullmatch(r"(\d+)w(\d+)s", str(name))
    if not match:
        raise ConfigError(f"{key} entry {name!r} is not allowed: must look like <way>w<shot>s, e.g. 5w1s")
    return EpisodeSpec(way=int(match[1]), shot=int(match[2]), query=query)


def _stream_id(name: str) -> int:
    """A stable stream number per test shape name, so adding a shape does not change the others."""
    return 2 + zlib.crc32(name.encode()) % (1 << 30)
