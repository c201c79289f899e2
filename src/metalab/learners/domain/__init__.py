"""Domain adaptation (issue 34): a source model adapted to held-out target domains by small adaptation objects."""

from metalab.learners.domain.adaptations import Adaptation, Coral, Episode, FineTune, Scratch, SourceOnly
from metalab.learners.domain.adapter import DomainAdapter

__all__ = ["Adaptation", "Coral", "DomainAdapter", "Episode", "FineTune", "Scratch", "SourceOnly"]
