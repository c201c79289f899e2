"""Training speed in episodes (tasks) per second, data loading included, validation excluded."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TrainThroughput(L.Callback):
    """Logs ``train/episodes_per_s`` each epoch and keeps the run's totals for ``metrics.json``.

    The clock runs from the start of each training epoch through every training batch (so data loading
    counts) and stops at the last batch, before validation. The first ``warmup_steps`` batches of the
    run are left out, as they pay one-off allocation costs.
    """

    def __init__(self, warmup_steps: int = 5) -> None:
        self.warmup_steps = warmup_steps
        self.seconds, self.tasks, self._last = 0.0, 0, 0.0
        self.unit = "episodes"  # "batches" when the batches are not episodes (continual learning)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if trainer.global_step > self.warmup_steps:
            self.seconds += now - self._last
            episodic = isinstance(batch, dict) and "support" in batch
            self.tasks += int(batch["support"].shape[0]) if episodic else 1  # a continual batch counts once
            self.unit = "episodes" if episodic else "batches"
        self._last = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seconds > 0:
            pl_module.log("train/episodes_per_s", self.episodes_per_second)

    @property
    def episodes_per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds else float("nan")
