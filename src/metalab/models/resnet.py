"""ResNet-18 for 32x32 images: the reduced version of GEM/DER (``nf=20``) and the full one (``nf=64``).

Same layout as Lopez-Paz & Ranzato 2017 (GEM) and Buzzega et al. 2020 (Mammoth): a 3x3 stride-1 stem
without max pooling, four stages of two basic blocks with ``nf, 2nf, 4nf, 8nf`` filters (strides 1, 2,
2, 2), global average pooling and one linear head. ``nf=20`` has 1.1M parameters, ``nf=64`` 11.2M.

The network is exposed as ``stages`` (an ``nn.ModuleList`` whose composition is the feature extractor)
and ``head``, so progressive networks can wire lateral connections between columns without knowing the
architecture. Activations are never in place: the exact Fisher reads layer outputs saved by hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metalab.errors import require


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GlobalAvgPool(nn.Module):
    """``"n c h w -> n c"`` by averaging."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Stem(nn.Module):
    """3x3 stride-1 conv -> BN -> ReLU (no max pooling at 32x32)."""

    def __init__(self, in_channels: int, nf: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, nf, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResNet18(nn.Module):
    """ResNet-18 on ``[n, in_channels, 32, 32]`` -> ``[n, n_classes]`` logits (see module docstring)."""

    def __init__(
        self, n_classes: int = 10, nf: int = 20, in_channels: int = 3, blocks: Sequence[int] = (2, 2, 2, 2)
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        require(len(blocks) == 4 and all(b >= 1 for b in blocks), "model.blocks", "4 counts >= 1", blocks)
        require(nf >= 1, "model.nf", ">= 1", nf)
        widths, strides = [nf, 2 * nf, 4 * nf, 8 * nf], [1, 2, 2, 2]
        stages: list[nn.Module] = [Stem(in_channels, nf)]
        in_planes = nf
        for width, stride, count in zip(widths, strides, blocks):
            layers = [BasicBlock(in_planes, width, stride)] + [BasicBlock(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = width
        stages.append(GlobalAvgPool())
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(8 * nf, n_classes)
        self.feature_dim = 8 * nf

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``"n c h w -> n d"`` with ``d = 8 nf``."""
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
