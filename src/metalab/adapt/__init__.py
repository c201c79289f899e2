"""The batched inner loop: per-task parameters stacked ``{name: [task, ...]}``, all tasks at once."""

from metalab.adapt.engine import InnerLoop, task_losses
from metalab.adapt.functional import TaskBatchedModel

__all__ = ["InnerLoop", "TaskBatchedModel", "task_losses"]
