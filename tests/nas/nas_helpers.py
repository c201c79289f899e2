"""Test helpers for NAS runs (importable by _target_ from a composed config)."""

import lightning as L


class CrashAtStep(L.Callback):
    """Simulates a killed process: raises inside an epoch, after the last end-of-epoch checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")
