"""Learning without Forgetting (Li & Hoiem 2017) on a single head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metalab.distillation import tempered_kl
from metalab.errors import require
from metalab.learners.continual.methods.base import Batch, ContinualLearnerView, ContinualMethod, frozen_copy


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, old_classes: int, temperature: float, weight: float = 1.0
) -> torch.Tensor:
    """``weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))`` over the first ``old_classes``
    outputs, averaged over the batch (``logits``, ``teacher_logits``: ``[n, classes]``). The ``T^2``
    keeps the gradient's scale independent of ``T`` (Hinton et al. 2015)."""
    return weight * tempered_kl(logits[:, :old_classes], teacher_logits[:, :old_classes], temperature)


class LwF(ContinualMethod):
    """From the second task on, a frozen copy of the network from the end of the previous task gives soft
    targets for the old classes on the current batch: ``alpha * T^2 * KL(old/T || new/T)`` over them.

    ``teacher_bn`` says which batch-norm statistics the frozen copy normalises with: ``running`` (its
    stored statistics, i.e. evaluation mode, as Mammoth computes LwF's targets) or ``batch`` (the
    current batch's own, as Avalanche's LwF, whose copy stays in training mode). They differ because
    the current task's images shift the statistics away from the ones the old network was trained with;
    ``batch`` is the default because it kept more of the old tasks on Split CIFAR-10 at our budget.
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0, teacher_bn: str = "batch") -> None:
        require(alpha >= 0, "learner.method.alpha", ">= 0", alpha)
        require(temperature > 0, "learner.method.temperature", "> 0", temperature)
        require(teacher_bn in ("running", "batch"), "learner.method.teacher_bn", "running or batch", teacher_bn)
        self.alpha, self.temperature, self.teacher_bn = alpha, temperature, teacher_bn
        self.previous: nn.Module | None = None
        self.old_classes = 0

    def before_task(self, learner: ContinualLearnerView, task: int) -> None:
        if task == 0:
            return
        self.previous = self._teacher(learner.net)
        self.old_classes = learner.stream_info.classes_before(task)  # all 10 in a domain-incremental stream

    def _teacher(self, net: nn.Module) -> nn.Module:
        teacher = frozen_copy(net)
        if self.teacher_bn == "batch":
            for module in teacher.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()  # normalise with the batch's statistics...
                    module.momentum = 0.0  # ...and leave the stored ones as they are
        return teacher

    def penalty(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        if self.previous is None:
            return None
        with torch.no_grad():
            teacher_logits = self.previous(learner.prepare(batch["x"]))
        return distillation_loss(logits, teacher_logits, self.old_classes, self.temperature, weight=self.alpha)

    def state_dict(self) -> dict[str, Any]:
        return {
            "old_classes": self.old_classes,
            "previous": None if self.previous is None else self.previous.state_dict(),
        }

    def load_state_dict(self, learner: ContinualLearnerView, state: dict[str, Any]) -> None:
        self.old_classes = state["old_classes"]
        if state["previous"] is not None:
            self.previous = self._teacher(learner.net)
            self.previous.load_state_dict(state["previous"])
