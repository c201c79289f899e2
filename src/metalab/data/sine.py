"""Sine-wave regression tasks, the toy problem of MAML (Finn et al. 2017, sec. 5.1).

A task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]`` and phase ``phi ~ U[0, pi]``; inputs
``x ~ U[-5, 5]``. The support set has ``shot`` points (K = 5 or 10 in the paper), the query set
``query`` points. Episodes use the keys of the classification episodes, with real-valued
``"t n 1"`` targets in ``support_labels`` / ``query_labels``; task ``i`` is a pure function of
``(seed, stream, i)`` as in :mod:`metalab.data.episodes`.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from metalab.data.episodes import EpochEpisodeSampler, episode_generator
from metalab.errors import ConfigError

TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2


class SineTasks(Dataset):
    """``episodes`` sine tasks (indices beyond ``len`` continue the stream, for later epochs)."""

    def __init__(
        self,
        episodes: int,
        shot: int,
        query: int,
        seed: int,
        stream: int,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.episodes, self.shot, self.query, self.seed, self.stream = episodes, shot, query, seed, stream
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def __len__(self) -> int:
        return self.episodes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = episode_generator(self.seed, self.stream, index)
        a = _uniform(g, 1, *self.amplitude)
        phi = _uniform(g, 1, *self.phase)
        x = _uniform(g, (self.shot + self.query, 1), *self.x_range)
        y = a * torch.sin(x - phi)
        return {
            "support": x[: self.shot],
            "support_labels": y[: self.shot],
            "query": x[self.shot :],
            "query_labels": y[self.shot :],
        }


def _uniform(g: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (high - low) + low


class SineDataModule(L.LightningDataModule):
    """Meta-batches of sine tasks: ``train_shot`` support points in training, ``test_shot`` at test."""

    def __init__(
        self,
        train_shot: int = 10,
        test_shot: int = 10,
        query: int = 10,
        test_query: int = 100,
        tasks_per_batch: int = 25,
        train_episodes: int = 100,
        val_episodes: int = 100,
        test_episodes: int = 1000,
        eval_tasks_per_batch: int = 100,
        seed: int = 0,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        for key, value in {
            "data.train_shot": train_shot,
            "data.test_shot": test_shot,
            "data.query": query,
            "data.test_query": test_query,
            "data.tasks_per_batch": tasks_per_batch,
            "data.train_episodes": train_episodes,
            "data.test_episodes": test_episodes,
        }.items():
            if value < 1:
                raise ConfigError(f"{key}={value} is not allowed: must be >= 1")
        self.hparams_ = dict(train_shot=train_shot, test_shot=test_shot, query=query, test_query=test_query)
        self.tasks_per_batch, self.eval_tasks_per_batch = tasks_per_batch, eval_tasks_per_batch
        self.train_episodes, self.val_episodes, self.test_episodes = train_episodes, val_episodes, test_episodes
        self.seed, self.eval_seed = seed, eval_seed
        self.test_names = [f"sine_k{test_shot}"]

    def train_dataloader(self) -> DataLoader:
        h = self.hparams_
        ds = SineTasks(self.train_episodes * self.tasks_per_batch, h["train_shot"], h["query"], self.seed, TRAIN_STREAM)
        return DataLoader(ds, batch_size=self.tasks_per_batch, sampler=EpochEpisodeSampler(len(ds)))

    def val_dataloader(self) -> DataLoader:
        h = self.hparams_
        ds = SineTasks(self.val_episodes, h["test_shot"], h["test_query"], self.eval_seed, VAL_STREAM)
        return DataLoader(ds, batch_size=self.eval_tasks_per_batch)

    def test_dataloader(self) -> DataLoader:
        h = self.hparams_
        ds = SineTasks(self.test_episodes, h["test_shot"], h["test_query"], self.eval_seed, TEST_STREAM)
        return DataLoader(ds, batch_size=self.eval_tasks_per_batch)
