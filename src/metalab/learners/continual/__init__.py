"""Continual learning: one training loop (:class:`ContinualLearner`) and small method objects."""

from metalab.learners.continual.learner import ContinualLearner
from metalab.learners.continual.methods import (EWC, ContinualMethod, DERPlusPlus, ExperienceReplay, Finetune, Joint,
                                                LwF, StreamInfo)
from metalab.learners.continual.progressive import Progressive, ProgressiveNetwork

__all__ = ["ContinualLearner", "ContinualMethod", "DERPlusPlus", "EWC", "ExperienceReplay", "Finetune", "Joint",
           "LwF", "Progressive", "ProgressiveNetwork", "StreamInfo"]
