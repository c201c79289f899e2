"""The look worker: takes every experiment's pending looks a moment after its outcomes are appended.

Why a worker: a write that analysed its own look had to hold the experiment's row lock through the analysis
and its commit, so concurrent writers to one experiment queued behind each other (issue 33). Writes now only
append; this thread takes the looks in id order (:func:`metalab.services.experiments.catch_up`) every
``interval`` seconds, so auto-completion follows the outcomes within about that delay. A pass costs a few
queries and a commit whatever its size, hence a quarter of a second by default rather than every write. Reads
of an experiment take the pending looks themselves, so what they show is exact. Several server processes may
each run one: catch-ups of one experiment serialise on its row lock and each outcome is taken once.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from metalab.services.experiments import catch_up, pending_experiments

log = logging.getLogger(__name__)


def take_pending_looks(sessions: sessionmaker[Session]) -> int:
    """One pass over the experiments with pending outcomes, one transaction each; how many outcomes it took."""
    with sessions() as session:
        experiment_ids = pending_experiments(session)
    taken = 0
    for experiment_id in experiment_ids:
        with sessions() as session:
            taken += catch_up(session, experiment_id)
            session.commit()
    return taken


class LookWorker:
    """A daemon thread calling :func:`take_pending_looks` until stopped; a failed pass is logged and retried."""

    def __init__(self, sessions: sessionmaker[Session], interval: float = 0.25):
        self.sessions, self.interval = sessions, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metalab-looks", daemon=True)

    def start(self) -> LookWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                take_pending_looks(self.sessions)
            except Exception:  # a locked or restarting database: the next pass retries
                log.exception("taking pending looks failed; retrying")
