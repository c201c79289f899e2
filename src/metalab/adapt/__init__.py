"""The batched inner loop: per-task parameters stacked ``{name: [task, ...]}``, all tasks at once; and the outer
update of Reptile (:mod:`metalab.adapt.outer_update`, numpy or torch).

The torch modules load on first use of their names (PEP 562), so importing ``metalab.adapt.outer_update`` (the
services' governor does) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "AdamState": "metalab.adapt.engine",
    "InnerLoop": "metalab.adapt.engine",
    "merge_sequential": "metalab.adapt.engine",
    "minibatch_indices": "metalab.adapt.engine",
    "task_losses": "metalab.adapt.engine",
    "TaskBatchedModel": "metalab.adapt.functional",
}

__all__ = ["AdamState", "InnerLoop", "TaskBatchedModel", "merge_sequential", "minibatch_indices", "task_losses"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metalab.adapt' has no attribute {name!r}")
