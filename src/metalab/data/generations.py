"""A datamodule for searches: the "batches" are generation numbers, so a search runs in Lightning's loop
(progress bar, loggers, checkpoints, resume) without a data set; the problem itself produces the data."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from metalab.errors import require


class GenerationDataModule(L.LightningDataModule):
    """``generations_per_epoch`` items per training epoch (a checkpoint is written after each epoch);
    the run's length is ``trainer.max_steps`` generations. The test split is a single item: one final
    assessment of the search's result."""

    def __init__(self, generations_per_epoch: int = 10) -> None:
        super().__init__()
        require(generations_per_epoch >= 1, "data.generations_per_epoch", ">= 1", generations_per_epoch)
        self.generations_per_epoch = generations_per_epoch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(self.generations_per_epoch), batch_size=None, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(torch.zeros(1), batch_size=None, shuffle=False)
