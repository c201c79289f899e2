"""Progressive neural networks (Rusu et al. 2016): one column per task, lateral adapters, frozen past.

Column ``k`` is a fresh copy of the backbone (re-initialised) trained on task ``k`` only. Each of its
stages after the first also receives the previous columns' outputs of the stage below through lateral
adapters, ``h_k^l = stage_k^l(h_k^{l-1}) + sum_{j<k} alpha * U_{k,j}^l(h_j^{l-1})`` (a 1x1 convolution with
the stage's stride for feature maps, a linear map for vectors), and so does its head. Laterals are added
to the stage output rather than before its last nonlinearity, which keeps the backbone a black box.
When task ``k`` starts, columns and adapters of tasks ``< k`` are frozen (``requires_grad=False``, batch
norm in eval mode), so earlier tasks' outputs never change: zero forgetting in task-IL by construction.

The network outputs one logit per class: the logits of task ``t``'s classes come from column ``t`` (the
newest column for tasks without their own yet). Task-IL evaluation masks to the task's classes, which is
exactly "use the task's column"; class-IL compares heads trained separately, which is not what PNNs
are for (Mammoth reports no class-IL figure for them).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from metalab.errors import ConfigError
from metalab.learners.continual.methods.base import ContinualLearnerView, ContinualMethod, StreamInfo


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def _adapter(source: torch.Tensor, target: torch.Tensor) -> nn.Module | None:
    """A map from a previous column's stage input (``source``) to this stage's output shape, or None."""
    if source.dim() == 4 and target.dim() == 4:  # "n c h w"
        stride = source.shape[-1] // target.shape[-1]
        if stride < 1 or source.shape[-1] != target.shape[-1] * stride:
            raise ConfigError(
                f"progressive: cannot map a {tuple(source.shape[1:])} feature map to {tuple(target.shape[1:])}"
            )
        return nn.Conv2d(source.shape[1], target.shape[1], kernel_size=1, stride=stride, bias=False)
    if source.dim() == 2 and target.dim() == 2:  # "n d"
        return nn.Linear(source.shape[1], target.shape[1], bias=False)
    return None  # parameter-free reshaping stages (pooling, flatten) need no lateral


class ProgressiveNetwork(nn.Module):
    """``n_tasks`` columns built from ``backbone`` (which must expose ``stages`` and ``head``)."""

    def __init__(
        self,
        backbone: nn.Module,
        n_tasks: int,
        classes_per_task: int,
        example_x: torch.Tensor,
        lateral_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not (hasattr(backbone, "stages") and hasattr(backbone, "head")):
            raise ConfigError(
                f"progressive networks need a backbone with `stages` and `head` "
                f"(ResNet18, MLP); got {type(backbone).__name__}"
            )
        self.n_tasks, self.classes_per_task = n_tasks, classes_per_task
        columns = [backbone]
        for _ in range(1, n_tasks):
            column = copy.deepcopy(backbone)
            _reinitialise(column)
            columns.append(column)
        self.columns = nn.ModuleList(columns)
        # Shapes of every stage's input and output, from one example.
        with torch.no_grad():
            was_training = backbone.training
            backbone.eval()
            shapes = [example_x]
            for stage in backbone.stages:
                shapes.append(stage(shapes[-1]))
            backbone.train(was_training)
        self.adapters = nn.ModuleDict()
        self.scales = nn.ParameterDict()
        n_stages = len(backbone.stages)
        for k in range(1, n_tasks):
            for j in range(k):
                # Level l < n_stages: stage l, input shapes[l], output shapes[l + 1]; level n_stages: the head.
                for level in range(1, n_stages + 1):
                    source = shapes[level]
                    target = shapes[level + 1] if level < n_stages else backbone.head(shapes[n_stages])
                    adapter = _adapter(source, target)
                    if adapter is not None:
                        self.adapters[f"{k}_{j}_{level}"] = adapter
                        self.scales[f"{k}_{j}_{level}"] = nn.Parameter(torch.tensor(lateral_scale))
        self.n_stages = n_stages
        self.active = 0
        self.set_active_column(0)

    def set_active_column(self, task: int) -> None:
        """Train column ``task`` and its adapters; freeze everything of earlier tasks."""
        self.active = task
        for k, column in enumerate(self.columns):
            column.requires_grad_(k == task)
        for key, module in self.adapters.items():
            module.requires_grad_(int(key.split("_")[0]) == task)
        for key, scale in self.scales.items():
            scale.requires_grad_(int(key.split("_")[0]) == task)
        self.train(self.training)

    def train(self, mode: bool = True) -> ProgressiveNetwork:
        super().train(mode)
        for k in range(self.active):  # frozen columns keep their batch-norm statistics
            self.columns[k].eval()
        return self

    def _lateral(self, k: int, level: int, inputs: list[torch.Tensor]) -> torch.Tensor | int:
        total: torch.Tensor | int = 0
        for j in range(k):
            key = f"{k}_{j}_{level}"
            if key in self.adapters:
                total = total + self.scales[key] * self.adapters[key](inputs[j])
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, ...] -> [n, n_tasks * classes_per_task]``; columns ``0..active`` are evaluated."""
        live = self.active + 1
        h = [x] * live
        for level, _ in enumerate(self.columns[0].stages):
            h = [
                self.columns[k].stages[level](h[k]) + (self._lateral(k, level, h) if level > 0 else 0)
                for k in range(live)
            ]
        logits = [self.columns[k].head(h[k]) + self._lateral(k, self.n_stages, h) for k in range(live)]
        c = self.classes_per_task
        return torch.cat([logits[min(t, self.active)][:, t * c : (t + 1) * c] for t in range(self.n_tasks)], dim=1)


class Progressive(ContinualMethod):
    """The method object: builds a :class:`ProgressiveNetwork` and switches columns at task starts."""

    name = "progressive"
    masks_training_logits_to_task = True  # each column's head is trained on its own task's classes
    needs_task_ids_at_test = True  # a test example's logits come from its own task's column

    def __init__(self, lateral_scale: float = 0.1) -> None:
        self.lateral_scale = lateral_scale
        self.network: ProgressiveNetwork | None = None

    def build_network(self, backbone: nn.Module, stream: StreamInfo) -> nn.Module:
        self.network = ProgressiveNetwork(
            backbone, stream.n_tasks, stream.classes_per_task, stream.example_x, self.lateral_scale
        )
        return self.network

    def before_task(self, learner: ContinualLearnerView, task: int) -> None:
        assert self.network is not None
        self.network.set_active_column(task)

    def state_dict(self) -> dict:
        return {"active": self.network.active if self.network is not None else 0}

    def load_state_dict(self, learner: ContinualLearnerView, state: dict) -> None:
        if self.network is not None:
            self.network.set_active_column(int(state["active"]))
