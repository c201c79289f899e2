"""The CPU-budget benchmark trains until its budget, however many passes of the episode loader that takes.

Its first-order run of 2026-12-08 made the loader's 50,000 meta-steps in 101 of its 120 CPU-minutes and then
ended without its last test or any message; these tests hold the loop to the budget on a loader of 3 batches.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from metalab.data.episodes import EpochEpisodeSampler

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("budget_bench", ROOT / "benchmarks/meta/maml_budget_vs_learn2learn.py")
budget_bench = importlib.util.module_from_spec(_spec)
sys.modules["budget_bench"] = budget_bench
_spec.loader.exec_module(budget_bench)

PASS = 3  # meta-batches in one pass of the fake loader


class EpisodeIndices(Dataset):
    """Episode ``i`` is just its index: which episodes a pass drew is then plain to see."""

    def __len__(self) -> int:
        return PASS

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index)


class ThreeBatchData:
    def train_dataloader(self) -> DataLoader:
        return DataLoader(EpisodeIndices(), batch_size=1, sampler=EpochEpisodeSampler(PASS))


class ScalarSide:
    """A one-parameter 'learner' whose loss costs some CPU time, so that a budget of milliseconds is reached."""

    def __init__(self) -> None:
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.parameters = [self.weight]

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        work = torch.randn(64, 64) @ torch.randn(64, 64)
        return self.weight * (batch.float().sum() + 0 * work.sum())


def test_meta_batches_go_on_past_one_pass_with_fresh_episodes():
    batches = budget_bench.meta_batches(ThreeBatchData())
    drawn = [int(next(batches)) for _ in range(3 * PASS)]
    assert drawn == list(range(3 * PASS))  # pass e draws episodes e*3 .. e*3+2: none repeated


def test_training_reaches_every_mark_however_many_passes_it_takes():
    budget_minutes = 0.002  # 120 ms of CPU time: many passes of 3 meta-batches
    args = argparse.Namespace(
        cpu_minutes=budget_minutes,
        marks=[budget_minutes / 2, budget_minutes],
        meta_lr=1e-3,
        schedule="cosine",
        log_every=10**9,
    )
    marks = []
    budget_bench.train(ScalarSide(), ThreeBatchData(), args, None, marks.append)
    assert len(marks) == 2, "training ended before its last mark"
    assert marks[-1]["meta_steps"] > PASS
