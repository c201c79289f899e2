"""Continual-learning methods as small objects plugged into the one step of the continual loop.

One module per method family, mirroring ``conf/learner/method/``:

==================  ==========================  ==========================================================
module              config                      what differs from plain sequential SGD
==================  ==========================  ==========================================================
``base``            finetune, joint             nothing (the floor), or training on every task seen (ceiling);
                                                also the contract with the learner (:class:`ContinualLearnerView`)
``ewc``             ewc, online_ewc             quadratic penalty weighted by the exact diagonal Fisher
``replay``          er, derpp                   a buffer replayed in the same forward (ER; DER++ with logits)
``lwf``             lwf                         distillation of the previous model's old-class outputs
``distill``         distill_replay              ER plus the previous model's tempered outputs on replayed examples
``progressive``     progressive                 a new column per task with lateral adapters
==================  ==========================  ==========================================================
"""

from metalab.learners.continual.methods.base import (
    Batch,
    ContinualLearnerView,
    ContinualMethod,
    Finetune,
    Joint,
    Replay,
    StreamInfo,
    check_method,
    check_method_fits,
)
from metalab.learners.continual.methods.ewc import EWC, QuadraticAnchor
from metalab.learners.continual.methods.lwf import LwF, distillation_loss
from metalab.learners.continual.methods.progressive import Progressive, ProgressiveNetwork
from metalab.learners.continual.methods.replay import DERPlusPlus, ExperienceReplay

__all__ = [
    "Batch",
    "ContinualLearnerView",
    "ContinualMethod",
    "DERPlusPlus",
    "EWC",
    "ExperienceReplay",
    "Finetune",
    "Joint",
    "LwF",
    "Progressive",
    "ProgressiveNetwork",
    "QuadraticAnchor",
    "Replay",
    "StreamInfo",
    "check_method",
    "check_method_fits",
    "distillation_loss",
]
