"""Progress toward a run's step or time budget, as plain lines.

Lightning's bar counts batches per epoch; a run bounded by ``trainer.max_steps`` or ``trainer.max_time``
(Reptile's 100,000 meta-steps, a 2-hour CPU budget) then shows only epoch after epoch, never how far it
is from the end. This callback prints, every ``every_seconds``, the steps done of ``max_steps`` (or of the
horizon a time budget's probe fitted, :class:`metalab.budget.FitHorizonToTimeBudget`, where training ends), the
rate and the time left: by the step rate for a step budget and by Lightning's own Timer for a time
budget, whichever ends first. Lines, not a bar, so they read the same in a terminal and in a study's
``console.log``; with an active tqdm bar they go through the bar's ``print`` so the bar stays intact.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer, TQDMProgressBar
from lightning.pytorch.trainer.states import RunningStage

from metalab.budget import FitHorizonToTimeBudget
from metalab.errors import ConfigError
from metalab.report.console import duration


class BudgetProgress(L.Callback):
    """Print ``[progress] step 1200/5000 (24%), 3.1 steps/s, 20m26s left (steps) ...`` every
    ``every_seconds`` of training, and once when training ends; silent for runs with neither a step nor a
    time budget (an epoch budget is what Lightning's bar already shows)."""

    def __init__(self, every_seconds: float = 30.0) -> None:
        if not every_seconds >= 0:
            raise ConfigError(f"every_seconds={every_seconds!r} is not allowed: every_seconds must be >= 0")
        self.every_seconds = float(every_seconds)
        self._start = self._last = 0.0
        self._start_step = 0
        self.lines: list[str] = []  # what was printed (tests, and a record of the run's pace)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step  # a resumed run's rate counts only the steps made now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_seconds and trainer.global_step > self._start_step:
            self._last = now
            self._emit(trainer, now)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > self._start_step:
            self._emit(trainer, time.monotonic(), final=True)

    def describe(self, trainer: L.Trainer, now: float, final: bool = False) -> str | None:
        """The progress line at ``now`` (``None`` without a step or time budget)."""
        max_steps, fitted = _step_target(trainer)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if max_steps is None and timer is None:
            return None
        step, elapsed = trainer.global_step, max(now - self._start, 1e-9)
        rate = (step - self._start_step) / elapsed
        parts = [
            f"step {step}/{max_steps} ({100 * step / max_steps:.0f}%{fitted})" if max_steps else f"step {step}",
            f"{rate:.3g} steps/s",
        ]
        if not final:
            left = []
            if max_steps and rate > 0:
                left.append(((max_steps - step) / rate, "steps"))
            if timer is not None:
                remaining = timer.time_remaining(RunningStage.TRAINING)
                if remaining is not None and math.isfinite(remaining):
                    left.append((max(remaining, 0.0), "max_time"))
            if left:
                seconds, bound = min(left)
                parts.append(f"{duration(seconds)} left (by {bound})")
        parts.append(f"{duration(elapsed)} elapsed")
        return ("[progress] training ended: " if final else "[progress] ") + ", ".join(parts)

    def _emit(self, trainer: L.Trainer, now: float, final: bool = False) -> None:
        line = self.describe(trainer, now, final)
        if line is None or not trainer.is_global_zero:
            return
        self.lines.append(line)
        bar = trainer.progress_bar_callback
        if _drawing(bar):
            bar.print(line)  # tqdm.write: above the bar, which is redrawn below
        else:
            print(line, flush=True)


def _step_target(trainer: L.Trainer) -> tuple[int | None, str]:
    """The step training ends at, and a note when it is not ``max_steps``: a time budget's horizon
    (:class:`metalab.budget.FitHorizonToTimeBudget`, fitted after its probe) ends training there, so
    ``max_steps`` (the paper's 60,000, say) would make a 2-hour run look as if it stopped at 9 %."""
    max_steps = trainer.max_steps if trainer.max_steps not in (None, -1) else None
    fitted = [c.horizon for c in trainer.callbacks if isinstance(c, FitHorizonToTimeBudget) and c.horizon]
    if fitted and (max_steps is None or min(fitted) < max_steps):
        return min(fitted), ", horizon fitted to the time budget"
    return max_steps, ""


def _drawing(bar: Any) -> bool:
    """Whether a tqdm training bar is on screen now (its ``print`` writes nothing when no bar is open, e.g.
    at the end of training)."""
    if not isinstance(bar, TQDMProgressBar) or not bar.is_enabled:
        return False
    try:
        return not bar.train_progress_bar.disable
    except TypeError:  # Lightning: no training bar was created yet
        return False
