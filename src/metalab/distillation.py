"""Knowledge distillation's loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

The student matches the teacher's softened class distribution: both sets of logits are divided by a
temperature ``T`` before the softmax, and the Kullback-Leibler divergence ``KL(p_teacher^T || p_student^T)``
is multiplied by ``T^2``. The factor is not cosmetic: the gradient of the softened term with respect to the
student's logits scales as ``1/T^2`` (Hinton et al. 2015, section 2), so without it raising ``T`` would
silently shrink the soft term against the label term. The full objective is a weighted average of that
term and the usual cross-entropy on the labels.

Written once here (the functional core) and used by the distillation learner
(:mod:`metalab.learners.distill`), the continual methods that distil an earlier model (LwF, and the
replay-distillation method of :mod:`metalab.learners.continual.methods.distill`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tempered_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch (``[n, classes]`` each).

    Computed in float32 whatever the logits' precision, so a bf16 forward does not round the divergence."""
    t = float(temperature)
    targets = torch.softmax(teacher_logits.float() / t, dim=-1)
    log_probs = torch.log_softmax(student_logits.float() / t, dim=-1)
    return t * t * F.kl_div(log_probs, targets, reduction="batchmean")


def distillation_objective(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(1 - alpha) * CE(student, labels) + alpha * T^2 KL`` and its two parts (detached, for logging).

    ``teacher_logits`` None (no teacher): the cross-entropy alone, whatever ``alpha``."""
    hard = F.cross_entropy(student_logits.float(), labels)
    if teacher_logits is None:
        return hard, {"hard": hard.detach()}
    soft = tempered_kl(student_logits, teacher_logits, temperature)
    return (1.0 - alpha) * hard + alpha * soft, {"hard": hard.detach(), "soft": soft.detach()}
