"""The plain loop: runs that have no gradient step to give Lightning (a search) and still behave like every run.

:func:`metalab.run.train` hands a learner that is not a LightningModule a :class:`LoopSettings` built from
the same config keys a Lightning run reads (``trainer.max_steps``, ``trainer.max_time``,
``trainer.log_every_n_steps``, ``trainer.fast_dev_run``, the loggers and the signal callback), so a command
reads the same for both. What the two paths share is kept identical: the checkpoint is a dict with a
``state_dict`` and a ``global_step`` at ``checkpoints/last.ckpt`` (so ``ckpt_path=last`` and
:func:`metalab.run.checkpoint_step` work unchanged), curves go through the same Lightning logger objects
(their public ``log_metrics``), and :func:`metalab.run.train` writes ``metrics.json`` for both.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from metalab.callbacks import StopOnSignal
from metalab.errors import ConfigError


@dataclass
class LoopSettings:
    """What the plain loop takes from the run (see the module docstring)."""

    output_dir: Path
    max_steps: int = -1  # -1: no step limit
    max_seconds: float | None = None  # trainer.max_time
    log_every_n_steps: int = 1
    fast_dev_run: int = 0  # debug: that many steps, no checkpoint, no logging
    loggers: list[Any] = field(default_factory=list)
    signals: StopOnSignal | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def step_limit(self) -> int | None:
        if self.fast_dev_run:
            return self.fast_dev_run
        return None if self.max_steps in (None, -1) else self.max_steps

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.fast_dev_run:
            return
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def finish_logging(self) -> None:
        for logger in self.loggers:
            logger.save()
            logger.finalize("success")


@runtime_checkable
class PlainRun(Protocol):
    """The contract of a learner on the plain loop (:class:`metalab.learners.search.SearchRun` is one)."""

    global_step: int

    def restore(self, ckpt_path: str) -> None:
        """Load the state saved in a checkpoint (to resume, or to test it with ``train=false``)."""

    def fit(self, settings: LoopSettings, ckpt_path: str | None) -> tuple[dict[str, float], dict[str, Any]]:
        """Train; return the last logged training figures and the record's ``stopped`` entry."""

    def test(self, settings: LoopSettings) -> dict[str, float]:
        """The final figures (``test/...``)."""


def parse_duration(value: Any) -> float | None:
    """``trainer.max_time`` in seconds: ``DD:HH:MM:SS`` or a dict of ``datetime.timedelta`` keywords, as Lightning
    takes it."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value):
            raise ConfigError(
                f"trainer.max_time={value!r} is not allowed: must be DD:HH:MM:SS or a dict such as {{hours: 2}}"
            )
        days, hours, minutes, seconds = (int(part) for part in value.split(":"))
        return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    try:
        return dt.timedelta(**dict(value)).total_seconds()
    except (TypeError, ValueError):
        raise ConfigError(
            f"trainer.max_time={value!r} is not allowed: must be DD:HH:MM:SS or a dict such as {{hours: 2}}"
        ) from None


def as_logged(value: float) -> float:
    """A figure as a Lightning run records it (``self.log`` stores a float32 tensor): the plain loop's records
    stay comparable, digit for digit, with those the search wrote while it ran inside Lightning."""
    return float(torch.tensor(value, dtype=torch.float32))


def save_checkpoint(path: Path, global_step: int, state: dict[str, Any]) -> None:
    """A checkpoint :func:`metalab.run.checkpoint_step` reads like a Lightning one (tensors and plain values only,
    so ``torch.load(weights_only=True)`` opens it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save({"state_dict": {}, "global_step": global_step, **state}, partial)
    partial.replace(path)  # a kill while writing leaves the previous checkpoint intact


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
