"""Keep third-party chatter off a run's console, so the project's own lines (precision, progress, results,
errors) are what a user reads.

What is dropped, and why it does not concern the user of a run:

- Lightning's start-up lines about accelerators that are absent (``GPU available: False``, ``TPU ...``),
  its advertising tips (``💡 Tip: ... try installing litlogger``) and its AMP line (the run's own
  ``[metalab] precision:`` line already says which precision and why);
- deprecation warnings that libraries raise about each other (torch about Lightning's pytree use, Optuna
  about the sweeper plugin's calls: 11 FutureWarnings in a 69-line sweep log): the fix is in those
  libraries, not in the user's command;
- W&B's closing lines carry ANSI colour codes when the run ends in ``atexit`` (its own stream check then
  fails), which litter redirected logs: :func:`finish_wandb` ends the W&B run while the streams are
  still the process's own, where W&B strips colours when they are not a terminal.

Warnings a user can act on (e.g. Lightning's "fewer batches than the logging interval") stay.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from typing import Any

NOISE = re.compile(r"^(GPU|TPU|HPU|IPU) available:|Tip: |^Using (bfloat16|16bit) Automatic Mixed Precision")
LIBRARY_MODULES = r"(lightning|lightning_fabric|pytorch_lightning|torch|optuna|hydra_plugins)(\..*)?"
_FILTER_NAME = "metalab-noise"


class DropNoise(logging.Filter):
    """Drops log records whose message matches :data:`NOISE`."""

    def __init__(self) -> None:
        super().__init__(_FILTER_NAME)

    def filter(self, record: logging.LogRecord) -> bool:
        return NOISE.search(record.getMessage()) is None


def quiet_third_party() -> None:
    """Install the filters (idempotent): on Lightning's loggers and their handlers, on the root logger's
    handlers (Hydra's job logging), and for library-to-library deprecation warnings."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", ""):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):  # a handler's filter also sees records of child loggers
            if not any(getattr(f, "name", None) == _FILTER_NAME for f in target.filters):
                target.addFilter(DropNoise())
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*deprecated in v\d")  # Optuna's phrase
    try:
        from optuna.exceptions import ExperimentalWarning
    except ImportError:
        return
    warnings.filterwarnings("ignore", category=ExperimentalWarning)


def finish_wandb(loggers: Iterable[Any]) -> None:
    """End the W&B run of each W&B logger now, not in ``atexit`` (see the module docstring)."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
