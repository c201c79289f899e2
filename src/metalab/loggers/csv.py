"""Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder already holds one, so a run resumed from
``last.ckpt`` into the same folder (``ckpt_path=last``, a resumed study run) loses every row it logged before the
interruption and its learning curve starts at the resume point. :class:`ResumableCSVLogger` keeps those rows
and appends after them. Rows logged after the checkpoint and before a hard kill (SIGKILL, out of memory) are
logged again by the resumed run; SIGTERM / Ctrl-C / max_time stop on the checkpointed step, so nothing repeats.
"""

from __future__ import annotations

import csv
import os
import warnings

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` of its folder instead of deleting it."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        path = os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)
        kept = None
        if os.path.isfile(path):
            with open(path, newline="") as file:
                kept = file.read()
            os.remove(path)  # so that the writer below finds nothing to delete
        with warnings.catch_warnings():  # its "previous log files will be deleted" is not true here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if kept:
            with open(path, "w", newline="") as file:
                file.write(kept)
            writer.metrics_keys = list(next(csv.reader(kept.splitlines())))  # its header: new keys rewrite it
        return writer
