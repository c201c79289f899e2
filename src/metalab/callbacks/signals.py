"""SIGTERM / SIGINT ask a run to stop like ``max_steps`` does: finish the step, save, test, record.

A batch scheduler's SIGTERM (or one Ctrl+C) should not throw the run away: the step in flight
completes, training ends, ``last.ckpt`` gets the final state (:class:`FinalStateCheckpoint`) and the
test runs on it. A second signal of the same kind acts as it would have without this callback.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import lightning as L

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(L.Callback):
    """During ``fit``, turns the first SIGTERM or SIGINT into ``trainer.should_stop`` at the end of the
    batch in flight (or of validation); records which signal arrived."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    def install(self) -> None:
        """Catch the first SIGTERM/SIGINT from now on (also used by the plain search loop, which has no Trainer)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        self.received = None

        def ask_to_stop(signum: int, frame: FrameType | None) -> None:
            self.received = signal.Signals(signum).name
            print(
                f"[metalab] {self.received} received: stopping after this step, saving last.ckpt, then testing "
                "(send it again to stop at once)",
                flush=True,
            )
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)

        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, ask_to_stop)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._stop_if_asked(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_asked(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_asked(trainer)

    def _stop_if_asked(self, trainer: L.Trainer) -> None:
        """Stop at a hook rather than from the handler, so the final checkpoint sees the stop on this batch."""
        if self.received:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
