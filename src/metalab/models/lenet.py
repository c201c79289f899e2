"""LeNet-style network without normalisation layers, for domain-shift studies on 28x28 digits.

The layout of Ganin et al. 2016's MNIST experiments (DANN, JMLR 17(59), Fig. 4: 5x5 conv 32 -> max-pool 2
-> 5x5 conv 48 -> max-pool 2 -> two fully connected layers of 100 -> 10 classes), with the widths in config.
It has no batch norm on purpose: batch statistics computed on target images would themselves be an
adaptation to the target (AdaBN, Li et al. 2017) and would leak unlabelled target data into every method,
including those that must not see any (source-only, fine-tuning, MAML's test-time inner loop). Without
running statistics the network also runs under ``torch.func.vmap``, so MAML and Reptile adapt it on
:mod:`metalab.adapt`'s batched engine unchanged.

Exposed as ``features`` (the penultimate representation, where feature alignment and the domain similarity
measures look) and ``head`` (the linear classifier), like :class:`metalab.models.mlp.MLP`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metalab.errors import require


class LeNet(nn.Module):
    """``[n, c, h, w] -> [n, n_classes]``: two 5x5 conv + 2x2 max-pool stages, ReLU fully connected layers."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 48),
        hidden: Sequence[int] = (100, 100),
        n_classes: int = 10,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        require(len(channels) == 2 and all(c >= 1 for c in channels), "model.channels", "two widths >= 1", channels)
        require(len(hidden) >= 1 and all(h >= 1 for h in hidden), "model.hidden", "widths >= 1 (at least one)", hidden)
        side = ((image_size - 4) // 2 - 4) // 2  # two 5x5 valid convolutions, each followed by a 2x2 pool
        require(side >= 1, "model.image_size", ">= 16 (two 5x5 convolutions and pools)", image_size)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        widths = [channels[1] * side * side, *hidden]
        self.fc = nn.Sequential(*(m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())))
        self.head = nn.Linear(widths[-1], n_classes)
        self.feature_dim = widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``"n c h w -> n d"``: the representation the head reads."""
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
