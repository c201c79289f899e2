"""Fault injection for testing self-healing training (tests and ``experiments/diagnosis`` only).

Three faults, each fired once, at the first training batch whose ``global_step`` reaches its step:

- ``nan_loss_at_step``: one input value of the batch set to NaN, so that batch's loss is NaN;
- ``lr_multiplier_at_step``: every learning rate (and the schedulers' base rates) multiplied by
  ``lr_multiplier`` (100: a misconfigured rate) from then on;
- ``corrupt_inputs_at_step``: the batch's inputs replaced by ``corruption_scale * (x + noise)``, finite
  garbage at the wrong scale (a decoding or normalisation bug in one shard).

The batch is edited by replacing the tensors in its dict (never in place: a batch may be a view of the
data set). For a continual learner's chunk of mini-batches, only the first mini-batch
(``datamodule.batch_size`` rows) is hit. Usable from the command line as any callback:
``+callbacks.fault._target_=metalab.callbacks.faults.FaultInjection +callbacks.fault.nan_loss_at_step=50``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from metalab.errors import require

INPUT_KEYS = ("support", "query", "x")  # episodic batches, continual batches


class FaultInjection(L.Callback):
    """Inject the faults named by the arguments (``None``: that fault is off); :attr:`fired` says what happened."""

    def __init__(
        self,
        nan_loss_at_step: int | None = None,
        lr_multiplier_at_step: int | None = None,
        lr_multiplier: float = 100.0,
        corrupt_inputs_at_step: int | None = None,
        corruption_scale: float = 1000.0,
        seed: int = 0,
    ) -> None:
        for key, value in (
            ("nan_loss_at_step", nan_loss_at_step),
            ("lr_multiplier_at_step", lr_multiplier_at_step),
            ("corrupt_inputs_at_step", corrupt_inputs_at_step),
        ):
            require(
                value is None or (isinstance(value, int) and value >= 0),
                f"callbacks.fault.{key}",
                "null or an integer >= 0",
                value,
            )
        self.due = {
            "nan_loss": nan_loss_at_step,
            "lr_multiplier": lr_multiplier_at_step,
            "corrupt_inputs": corrupt_inputs_at_step,
        }
        self.lr_multiplier, self.corruption_scale = lr_multiplier, corruption_scale
        self.generator = torch.Generator().manual_seed(seed)
        self.fired: list[dict[str, Any]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        for fault, at in self.due.items():
            if at is None or step < at or any(f["fault"] == fault for f in self.fired):
                continue
            rows = getattr(trainer.datamodule, "batch_size", None) if "x" in batch else None
            if fault == "nan_loss":
                _edit_inputs(batch, rows, _with_one_nan)
            elif fault == "corrupt_inputs":
                _edit_inputs(
                    batch,
                    rows,
                    lambda x: self.corruption_scale * (x + torch.randn(x.shape, generator=self.generator).to(x)),
                )
            else:
                _multiply_lr(trainer, self.lr_multiplier)
            self.fired.append({"fault": fault, "step": step})
            print(f"[metalab] fault injected at step {step}: {fault}", flush=True)


def _edit_inputs(batch: dict[str, torch.Tensor], rows: int | None, edit: Any) -> None:
    """Replace each input tensor of ``batch`` by ``edit(tensor)`` (only its first ``rows`` rows if given)."""
    for key in INPUT_KEYS:
        if key not in batch:
            continue
        x = batch[key]
        if rows is None or rows >= len(x):
            batch[key] = edit(x)
        else:
            batch[key] = torch.cat([edit(x[:rows]), x[rows:]])


def _with_one_nan(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[(0,) * x.dim()] = float("nan")
    return y


def _multiply_lr(trainer: L.Trainer, factor: float) -> None:
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] *= factor
    for config in trainer.lr_scheduler_configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [b * factor for b in config.scheduler.base_lrs]
