"""The batched inner loop: per-task parameters stacked ``{name: [task, ...]}``, all tasks at once."""

from metalab.adapt.engine import AdamState, InnerLoop, merge_sequential, minibatch_indices, task_losses
from metalab.adapt.functional import TaskBatchedModel

__all__ = ["AdamState", "InnerLoop", "TaskBatchedModel", "merge_sequential", "minibatch_indices", "task_losses"]
