"""Experience replay (ER, Chaudhry et al. 2019) and Dark Experience Replay++ (DER++, Buzzega et al. 2020).

Both keep a buffer (``buffer.py``) and hand the step a :class:`~.base.Replay`: stored examples that go
through the same forward pass as the current batch, with the targets they are scored against.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from metalab.errors import require
from metalab.learners.continual.buffer import ReservoirBuffer, TaskBalancedBuffer
from metalab.learners.continual.methods.base import Batch, ContinualLearnerView, ContinualMethod, Replay, StreamInfo


class ExperienceReplay(ContinualMethod):
    """Experience replay: each step also trains on ``replay_batch_size`` stored samples.

    ``fill``: ``"reservoir"`` (Chaudhry et al. 2019, as in DER/Mammoth) offers every training batch to a
    reservoir, so the buffer also holds the current task; ``"task_end"`` stores a task-balanced random
    subset of each task when it ends (as Avalanche's ``Replay``), so only earlier tasks are replayed.
    """

    name = "er"

    def __init__(
        self, buffer_size: int = 500, replay_batch_size: int = 32, seed: int = 0, fill: str = "reservoir"
    ) -> None:
        require(buffer_size >= 1, "learner.method.buffer_size", "at least 1", buffer_size)
        require(replay_batch_size >= 1, "learner.method.replay_batch_size", "at least 1", replay_batch_size)
        require(fill in ("reservoir", "task_end"), "learner.method.fill", "'reservoir' or 'task_end'", fill)
        self.fill_at_task_end = fill == "task_end"
        self.buffer = (
            TaskBalancedBuffer(buffer_size, seed) if self.fill_at_task_end else ReservoirBuffer(buffer_size, seed)
        )
        self.replay_batch_size = replay_batch_size

    def setup(self, stream: StreamInfo) -> None:
        require(
            self.buffer.size <= stream.train_examples,
            "learner.method.buffer_size",
            f"at most {stream.train_examples}, the training examples of the whole stream",
            self.buffer.size,
        )

    def replay_batch(self, learner: ContinualLearnerView, n: int) -> Replay | None:
        if not len(self.buffer):
            return None
        stored = self.buffer.sample(self.replay_batch_size)
        return Replay(x=stored["x"], labels=stored["y"])

    def replay_loss(self, learner: ContinualLearnerView, logits: torch.Tensor, replay: Replay) -> torch.Tensor:
        return F.cross_entropy(logits, replay.labels)

    def after_step(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> None:
        if not self.fill_at_task_end:
            self.buffer.add({"x": batch["x"], "y": batch["y"], "task": batch["task"]})

    def after_task(self, learner: ContinualLearnerView, task: int) -> None:
        if self.fill_at_task_end:
            x, y = learner.task_training_data(task)
            self.buffer.add_task({"x": x, "y": y, "task": torch.full_like(y, task)})

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, learner: ContinualLearnerView, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])


class DERPlusPlus(ExperienceReplay):
    """Dark Experience Replay++: the buffer keeps the logits seen at insertion.

    Loss on replay: ``alpha * MSE(logits, stored logits)`` on one buffer sample plus
    ``beta * CE(logits, labels)`` on a second, independent one (both go through the same forward).
    """

    name = "derpp"

    def __init__(
        self, buffer_size: int = 500, replay_batch_size: int = 32, alpha: float = 0.1, beta: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(buffer_size, replay_batch_size, seed)
        require(alpha >= 0, "learner.method.alpha", ">= 0", alpha)
        require(beta >= 0, "learner.method.beta", ">= 0", beta)
        self.alpha, self.beta = alpha, beta

    def replay_batch(self, learner: ContinualLearnerView, n: int) -> Replay | None:
        if not len(self.buffer):
            return None
        for_logits, for_labels = self.buffer.sample(self.replay_batch_size), self.buffer.sample(self.replay_batch_size)
        return Replay(
            x=torch.cat([for_logits["x"], for_labels["x"]]), labels=for_labels["y"], logits=for_logits["logits"]
        )

    def replay_loss(self, learner: ContinualLearnerView, logits: torch.Tensor, replay: Replay) -> torch.Tensor:
        k = replay.n_logit_rows
        logit_term = F.mse_loss(logits[:k], replay.logits)
        label_term = F.cross_entropy(logits[k:], replay.labels)
        return self.alpha * logit_term + self.beta * label_term

    def after_step(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> None:
        self.buffer.add({"x": batch["x"], "y": batch["y"], "task": batch["task"], "logits": logits.float()})
