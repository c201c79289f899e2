"""Test helpers for search runs (importable by _target_ from a composed config)."""

import lightning as L


class CrashAfterStep(L.Callback):
    """Simulates a killed process: raises in the middle of an epoch, after the last checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")
