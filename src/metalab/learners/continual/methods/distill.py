"""Replay distillation: the previous model's tempered outputs on replayed examples (Hinton et al. 2015 inside
the continual loop).

Why another method beside LwF and DER++: each covers half of it. LwF (Li & Hoiem 2017) distils the
previous model with the tempered KL, but on the *current* task's images only, which say little about the old
classes. DER++ (Buzzega et al. 2020) replays stored examples, but matches the logits recorded when each
example was inserted (mid-training snapshots of a moving network) with a squared error, not a tempered KL.
Here a reservoir buffer (as ER) is replayed and, from the second task on, a frozen copy of the network as
it was when the previous task ended scores the replayed images; the loss on the replayed part is
``beta * CE(labels) + alpha * T^2 KL(softmax(previous/T) || softmax(current/T))`` over the classes the previous
model was trained on (:func:`metalab.distillation.tempered_kl`). In the first task there is no previous model
and it is experience replay.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metalab.distillation import tempered_kl
from metalab.errors import require
from metalab.learners.continual.methods.base import ContinualLearnerView, Replay, frozen_copy
from metalab.learners.continual.methods.replay import ExperienceReplay


class ReplayDistillation(ExperienceReplay):
    """Experience replay whose replayed examples are also distilled from the previous task's final model
    (see the module docstring). ``alpha``: weight of the tempered KL; ``beta``: of the replayed labels'
    cross-entropy; ``temperature``: T > 0."""

    name = "distill_replay"

    def __init__(
        self,
        buffer_size: int = 500,
        replay_batch_size: int = 32,
        alpha: float = 1.0,
        beta: float = 0.5,
        temperature: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__(buffer_size, replay_batch_size, seed)
        require(alpha >= 0, "learner.method.alpha", ">= 0", alpha)
        require(beta >= 0, "learner.method.beta", ">= 0", beta)
        require(temperature > 0, "learner.method.temperature", "> 0", temperature)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.previous: nn.Module | None = None
        self.old_classes = 0

    def before_task(self, learner: ContinualLearnerView, task: int) -> None:
        if task == 0:
            return
        self.previous = frozen_copy(learner.net)  # evaluation mode: replayed images are old-task images
        self.old_classes = learner.stream_info.classes_before(task)

    def replay_loss(self, learner: ContinualLearnerView, logits: torch.Tensor, replay: Replay) -> torch.Tensor:
        loss = self.beta * F.cross_entropy(logits, replay.labels)
        if self.previous is None:
            return loss
        with torch.no_grad():
            previous_logits = self.previous(learner.prepare(replay.x))
        k = self.old_classes
        return loss + self.alpha * tempered_kl(logits[:, :k], previous_logits[:, :k], self.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "old_classes": self.old_classes,
            "previous": None if self.previous is None else self.previous.state_dict(),
        }

    def load_state_dict(self, learner: ContinualLearnerView, state: dict[str, Any]) -> None:
        super().load_state_dict(learner, state)
        self.old_classes = state["old_classes"]
        if state["previous"] is not None:
            self.previous = frozen_copy(learner.net)
            self.previous.load_state_dict(state["previous"])
