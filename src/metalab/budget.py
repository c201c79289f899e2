"""Learning-rate schedules that fit a wall-time budget on whatever CPU the run is on.

An experiment that promises "N CPU-minutes" cannot anneal over a fixed step count: 11,000 MAML steps fit
in 110 minutes on a CPU with AVX-512 BF16 and far fewer on one without (issue 23). So the schedule's
length (its *horizon*) is left open, :class:`FitHorizonToTimeBudget` measures seconds per step over a
short probe at the start of training and sets the horizon to the steps that fit in what is left of
``trainer.max_time``; training then stops at the horizon, where the schedule ends (the callback sets
``trainer.should_stop`` there, Lightning's public way to end a fit early; validation runs once more at that
step, as for any early stop). The learning rate is
held at its initial value during the probe (a few dozen steps, where a cosine over thousands is 1.0 to
five digits anyway). The horizon is stored in the checkpoint (scheduler and callback state), so a resumed
run keeps it, and in ``metrics.json`` beside the step reached.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from metalab.errors import ConfigError

SHAPES = ("cosine", "linear")


def steps_that_fit(seconds_left: float, seconds_per_step: float, margin: float) -> int:
    """Whole steps of ``seconds_per_step`` in ``margin`` of ``seconds_left`` (the rest is for validation)."""
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be positive, got {seconds_per_step}")
    return max(0, math.floor(max(seconds_left, 0.0) * margin / seconds_per_step))


class AnnealToHorizon(torch.optim.lr_scheduler.LRScheduler):
    """``lr = base * factor(step / horizon)``: cosine or linear from 1 down to ``end_factor`` at the horizon.

    A closed form in the step, so setting the horizon after the probe gives exactly the schedule that
    horizon defines from then on; with no horizon yet the factor is 1. ``horizon`` may also be given
    (e.g. ``${trainer.max_steps}``) for a run with a fixed step budget.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        shape: str = "cosine",
        end_factor: float = 0.0,
        horizon: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        if shape not in SHAPES:
            raise ConfigError(f"learner.scheduler.shape={shape!r} is not allowed: must be one of {', '.join(SHAPES)}")
        if not 0.0 <= end_factor <= 1.0:
            raise ConfigError(f"learner.scheduler.end_factor={end_factor} is not allowed: must be in [0, 1]")
        self.shape, self.end_factor = shape, end_factor
        self.horizon = horizon if horizon and horizon > 0 else None
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if self.horizon is None:
            return 1.0
        progress = min(step / self.horizon, 1.0)
        weight = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.shape == "cosine" else 1.0 - progress
        return self.end_factor + (1.0 - self.end_factor) * weight

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class FitHorizonToTimeBudget(L.Callback):
    """Probe seconds per training step, then set every :class:`AnnealToHorizon`'s horizon to the steps that fit
    in the rest of ``trainer.max_time`` (and at most a ``trainer.max_steps`` given), and stop training there.

    ``warmup_steps`` are left out of the probe (one-off allocation costs); ``margin`` keeps a share of the
    remaining time for validation and the final checkpoint.
    """

    def __init__(self, probe_steps: int = 30, warmup_steps: int = 5, margin: float = 0.9) -> None:
        if probe_steps < 1 or warmup_steps < 0 or not 0 < margin <= 1:
            raise ConfigError(
                "callbacks.time_budget: probe_steps >= 1, warmup_steps >= 0 and 0 < margin <= 1 "
                f"are required; got {probe_steps}, {warmup_steps}, {margin}"
            )
        self.probe_steps, self.warmup_steps, self.margin = probe_steps, warmup_steps, margin
        self.horizon: int | None = None
        self.seconds_per_step: float | None = None
        self._probe_from = warmup_steps  # the step the probe's clock starts at
        self._probe_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.horizon is not None:  # resumed: keep the horizon the run chose
            self._apply(trainer)
            return
        if self._timer(trainer) is None and trainer.max_steps in (None, -1):
            raise ConfigError(
                "callbacks.time_budget needs trainer.max_time (or trainer.max_steps) to fit a "
                "schedule to; set one or remove callbacks.time_budget"
            )
        # Batch-end hooks see steps 1, 2, ...: a probe from step 0 (no warm-up), or from a run resumed before
        # its probe ended, starts its clock here.
        self._probe_from = max(self.warmup_steps, trainer.global_step)
        if trainer.global_step == self._probe_from:
            self._probe_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.horizon is not None:
            self._stop_at_horizon(trainer)
            return
        step = trainer.global_step
        if step == self._probe_from:
            self._probe_start = time.perf_counter()
        elif step == self._probe_from + self.probe_steps:
            self.seconds_per_step = (time.perf_counter() - self._probe_start) / self.probe_steps
            self.horizon = self._horizon(trainer, step)
            print(
                f"[metalab] time budget: {self.seconds_per_step:.3f} s/step over {self.probe_steps} steps -> "
                f"the schedule anneals over {self.horizon} steps",
                flush=True,
            )
            self._apply(trainer)
            self._stop_at_horizon(trainer)

    def reached(self, trainer: L.Trainer) -> bool:
        """Whether training has reached the fitted horizon (what ended it, for the run record)."""
        return self.horizon is not None and trainer.global_step >= self.horizon

    def _stop_at_horizon(self, trainer: L.Trainer) -> None:
        if self.reached(trainer):
            trainer.should_stop = True

    def _horizon(self, trainer: L.Trainer, step: int) -> int:
        timer = self._timer(trainer)
        limits = []
        if timer is not None and timer.time_remaining() is not None:
            limits.append(step + steps_that_fit(timer.time_remaining(), self.seconds_per_step, self.margin))
        if trainer.max_steps not in (None, -1):
            limits.append(trainer.max_steps)
        return max(min(limits), step + 1)

    def _apply(self, trainer: L.Trainer) -> None:
        self._stop_at_horizon(trainer)  # a run resumed at its horizon trains no further step
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, AnnealToHorizon):
                config.scheduler.horizon = self.horizon

    @staticmethod
    def _timer(trainer: L.Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)

    def state_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "seconds_per_step": self.seconds_per_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.horizon, self.seconds_per_step = state_dict["horizon"], state_dict["seconds_per_step"]
