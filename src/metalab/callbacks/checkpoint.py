"""``last.ckpt`` holds the state a run ended in, so the reported test metrics can be re-derived from it.

Lightning's ModelCheckpoint writes ``last.ckpt`` at epoch ends only (and at train end only if it never
wrote one). A run stopped inside an epoch, by ``max_steps``, ``max_time`` or a signal, was then tested on
weights newer than its ``last.ckpt`` (issue 25: step 1,679 tested, step 1,000 saved).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalStateCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also writes ``last.ckpt`` after the batch that ends training.

    It is saved from ``on_train_batch_end`` of that batch (after every other callback has had its say:
    Lightning runs checkpoint callbacks last, so the Timer's ``max_time`` check and a signal's stop request
    are already in ``trainer.should_stop``). Saved there, the checkpoint is an ordinary mid-epoch one:
    loop, optimizer, scheduler, callback (RNG, timer) and data-loader state, so ``ckpt_path=last`` resumes
    with the next batch. Training ends before ``Trainer.test``, so the test runs on exactly these weights.
    A stop decided elsewhere (e.g. during validation) is caught at ``on_train_end``.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._training_ends_after_this_batch(trainer):
            self._save_final_state(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_final_state(trainer)

    @staticmethod
    def _training_ends_after_this_batch(trainer: L.Trainer) -> bool:
        max_steps = trainer.max_steps
        return trainer.should_stop or (max_steps not in (None, -1) and trainer.global_step >= max_steps)

    def _save_final_state(self, trainer: L.Trainer) -> None:
        if not self.save_last or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if self.last_model_path and self._last_global_step_saved == trainer.global_step:
            return  # last.ckpt already holds this step
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
