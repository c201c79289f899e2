"""Detectors of unhealthy training, on plain sequences of numbers (no torch, no Lightning).

Each detector sees one value per observation (a training batch: its loss, gradient norm or seconds per
step) and answers ``None`` (healthy) or a short diagnosis. They hold only what their rule needs (a few
dozen recent values), so the :class:`~metalab.callbacks.diagnosis.SelfHealing` callback can run them on
every batch, and tests can feed them synthetic sequences.

Robust statistics on purpose: a median ignores the odd noisy episode, so conservative factors raise
no alert on a healthy run (the clean runs of ``experiments/diagnosis`` are the check), while the faults
the detectors exist for (a gradient or loss many times its usual size, a loss that keeps rising, a
step that became many times slower) stand out by orders of magnitude.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence


class RunningMedian:
    """The median of the last ``window`` values, kept sorted as they come (a few microseconds per value,
    where re-sorting each time cost more than the rest of a batch's checks)."""

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.sorted: list[float] = []

    def append(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            del self.sorted[bisect.bisect_left(self.sorted, self.values[0])]
        self.values.append(value)
        bisect.insort(self.sorted, value)

    def median(self) -> float:
        n = len(self.sorted)
        return self.sorted[n // 2] if n % 2 else 0.5 * (self.sorted[n // 2 - 1] + self.sorted[n // 2])

    def __len__(self) -> int:
        return len(self.values)

    def clear(self) -> None:
        self.values.clear()
        self.sorted.clear()


class Detector:
    """What a detector has learnt of its run (recent values, bests, counts), as plain numbers, so a run
    resumed from a checkpoint diagnoses as the uninterrupted run would. Without it a resumed run measured
    its divergence floor on the converged loss it resumed at, not on the loss it started from, and took a
    converged loss's wandering for divergence (the Reptile 5w5s study run of 2026-12-07: six rollbacks and
    an early stop after resuming at step 20,000). Settings (factors, windows) are the config's, not saved."""

    STATE: tuple[str, ...] = ()  # the fields besides running medians that carry the run's history

    def state_dict(self) -> dict[str, object]:
        medians = {k: list(v.values) for k, v in vars(self).items() if isinstance(v, RunningMedian)}
        return {**medians, **{k: getattr(self, k) for k in self.STATE}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            current = getattr(self, key, None)
            if isinstance(current, RunningMedian):
                current.clear()
                for item in value:  # type: ignore[attr-defined]
                    current.append(float(item))
            elif key in self.STATE:
                setattr(self, key, value)


class SpikeDetector(Detector):
    """One value far above the running median of the last ``window`` healthy values: ``value > factor *
    max(median, floor)``, once ``warmup`` values were seen; ``two_sided`` also flags ``value < median / factor``.
    Used for gradient explosion (the global gradient norm), a poisoned batch (its loss) and corrupted inputs
    (their RMS). ``floor``: a scale below which nothing counts as a spike (a loss near zero times 40 is still
    a small loss). A flagged value is not added to the history, so one spike does not raise the bar for the next."""

    def __init__(self, factor: float, window: int, warmup: int, floor: float = 0.0, two_sided: bool = False) -> None:
        self.factor, self.warmup, self.floor, self.two_sided = factor, warmup, floor, two_sided
        self.history = RunningMedian(window)

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return None  # non-finite values are the non-finite check's business
        if len(self.history) >= max(1, self.warmup):
            median = self.history.median()
            if value > self.factor * max(median, self.floor):
                return (
                    f"{value:.3g} is {value / max(median, 1e-300):.3g}x the running median {median:.3g} "
                    f"(limit {self.factor:g}x)"
                )
            if self.two_sided and value * self.factor < median:
                return (
                    f"{value:.3g} is 1/{median / max(value, 1e-300):.3g} of the running median {median:.3g} "
                    f"(limit 1/{self.factor:g})"
                )
        self.history.append(value)
        return None

    def reset(self) -> None:
        self.history.clear()


class RiseDetector(Detector):
    """The median of the last ``window`` values exceeds ``factor`` times the lowest such median seen so far.

    Divergence (a loss that rises over a window, not one noisy batch) and a throughput collapse
    (seconds per step that stay many times above their best) are both this rule. ``floor`` is a fraction
    of the first full window's median (the start of the run, or of a task): a best below it counts as that
    floor, because a loss that has fallen near zero wanders by large ratios and stays small (a converged
    Reptile or Matching Networks run moves between 0.006 and 0.04 against 1.6 at its start; with no floor
    that ratio read as divergence and stopped clean runs). ``forget_best`` in :meth:`reset` starts over (a
    new task has a new loss scale); without it the best survives a rollback, which returns the model to a
    state that had about that loss."""

    STATE = ("best", "start")

    def __init__(self, factor: float, window: int, floor: float = 0.0) -> None:
        self.factor, self.window, self.floor = factor, window, floor
        self.values = RunningMedian(window)
        self.best: float | None = None
        self.start: float | None = None

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return None
        self.values.append(value)
        if len(self.values) < self.window:
            return None
        median = self.values.median()
        if self.start is None:
            self.start = median
        if self.best is None or median < self.best:
            self.best = median
            return None
        bar = max(self.best, self.floor * self.start)
        if median > self.factor * bar and bar > 0:
            floor_note = f", floor {self.floor:g} x the start {self.start:.3g}" if bar > self.best else ""
            return (
                f"median of the last {self.window} is {median:.3g}, {median / self.best:.3g}x its best "
                f"{self.best:.3g} (limit {self.factor:g}x{floor_note})"
            )
        return None

    def reset(self, forget_best: bool = False) -> None:
        self.values.clear()
        if forget_best:
            self.best = None
            self.start = None


class PlateauDetector(Detector):
    """No relative improvement of at least ``min_improvement`` in the windowed median for ``patience``
    observations. Fires once per ``patience`` observations without progress (after each LR reduction
    the count starts again)."""

    STATE = ("best", "since_best")

    def __init__(self, patience: int, min_improvement: float, window: int) -> None:
        self.patience, self.min_improvement, self.window = patience, min_improvement, window
        self.values = RunningMedian(window)
        self.best: float | None = None
        self.since_best = 0

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return None
        self.values.append(value)
        if len(self.values) < self.window:
            return None
        median = self.values.median()
        if self.best is None or median < self.best * (1.0 - self.min_improvement):
            self.best, self.since_best = median, 0
            return None
        self.since_best += 1
        if self.since_best >= self.patience:
            self.since_best = 0
            return (
                f"loss median {median:.3g} has not improved by {self.min_improvement:.0%} on its best "
                f"{self.best:.3g} for {self.patience} batches"
            )
        return None

    def reset(self) -> None:
        self.values.clear()
        self.best, self.since_best = None, 0


class JumpAboveMax(Detector):
    """A value more than ``factor`` times the largest healthy value seen so far (a learning rate that jumps:
    warm-up and restarts never exceed the peak rate they have already reached, a misconfigured rate does)."""

    STATE = ("peak",)

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.peak: float | None = None

    def observe(self, value: float) -> str | None:
        if not math.isfinite(value):
            return None
        if self.peak is not None and self.peak > 0 and value > self.factor * self.peak:
            return (
                f"{value:.3g} is {value / self.peak:.3g}x the largest so far {self.peak:.3g} (limit {self.factor:g}x)"
            )
        self.peak = value if self.peak is None else max(self.peak, value)
        return None


class ForgettingJump:
    """A continual run's accuracy on an earlier task falls by more than ``threshold`` points at one task end.

    ``previous`` and ``current`` are consecutive rows of the accuracy matrix R (accuracy on every task,
    in %); ``earlier`` is the number of tasks trained before the one that just ended, whose accuracies
    are compared (Chaudhry et al. 2018 define forgetting on the same entries; this is its one-step jump).
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def observe(self, previous: Sequence[float], current: Sequence[float], earlier: int) -> str | None:
        drops = [
            (previous[j] - current[j], j)
            for j in range(earlier)
            if math.isfinite(previous[j]) and math.isfinite(current[j])
        ]
        if not drops:
            return None
        drop, task = max(drops)
        if drop > self.threshold:
            return (
                f"accuracy on task {task} fell {drop:.1f} points ({previous[task]:.1f} -> {current[task]:.1f} %) "
                f"at one task end (limit {self.threshold:g})"
            )
        return None
