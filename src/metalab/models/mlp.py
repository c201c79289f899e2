"""Fully connected network for Split MNIST: 784 -> 100 -> 100 -> 10, as Mammoth's MNIST MLP (DER paper).

``hidden=[400, 400]`` gives the larger variant used elsewhere in the continual literature. Exposed as
``stages`` and ``head`` like :class:`metalab.models.resnet.ResNet18`, so progressive networks can wire
lateral connections; activations are not in place (the exact Fisher reads saved layer outputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``[n, c, h, w]`` (flattened) or ``[n, in_features]`` -> ``[n, n_classes]``; ReLU between layers."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (100, 100), n_classes: int = 10) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Flatten() if i == 0 else nn.Identity(), nn.Linear(a, b), nn.ReLU())
            for i, (a, b) in enumerate(zip(widths, widths[1:]))
        )
        self.head = nn.Linear(widths[-1], n_classes)
        self.feature_dim = widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
