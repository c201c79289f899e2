"""Continual learning: one training loop (:class:`ContinualLearner` over :mod:`.loop`) and small method objects."""

from metalab.learners.continual.learner import ContinualLearner
from metalab.learners.continual.loop import PlainLearner, continual_step, evaluate_all_tasks, evaluate_task
from metalab.learners.continual.methods import (
    EWC,
    ContinualLearnerView,
    ContinualMethod,
    DERPlusPlus,
    ExperienceReplay,
    Finetune,
    Joint,
    LwF,
    Progressive,
    ProgressiveNetwork,
    Replay,
    StreamInfo,
)

__all__ = [
    "ContinualLearner",
    "ContinualLearnerView",
    "ContinualMethod",
    "DERPlusPlus",
    "EWC",
    "ExperienceReplay",
    "Finetune",
    "Joint",
    "LwF",
    "PlainLearner",
    "Progressive",
    "ProgressiveNetwork",
    "Replay",
    "StreamInfo",
    "continual_step",
    "evaluate_all_tasks",
    "evaluate_task",
]
