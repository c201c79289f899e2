"""Conv4: the four-block convolutional embedding of Vinyals et al. 2016, used by ProtoNets and MAML."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (padding 1) -> batch norm -> 2x2 max pool -> ReLU: halves the spatial size.

    The pool runs before the ReLU: ``relu(max(x)) == max(relu(x))`` exactly (ReLU is monotone), with
    the same gradients, and the ReLU then touches a quarter of the elements.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )


class Conv4(nn.Module):
    """Four conv blocks with ``hidden`` filters; a 28x28 input becomes a ``hidden``-dim vector (1x1).

    ``out_features`` > 0 adds a linear classifier head (MAML-style); 0 returns the flattened embedding
    (ProtoNet-style). ``in_channels`` 1 for Omniglot, 3 for colour images.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, blocks: int = 4, out_features: int = 0,
                 image_size: int = 28) -> None:
        super().__init__()
        chans = [in_channels] + [hidden] * blocks
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in zip(chans, chans[1:])))
        side = image_size
        for _ in range(blocks):
            side //= 2
        self.embedding_dim = hidden * max(side, 1) ** 2
        self.head = nn.Linear(self.embedding_dim, out_features) if out_features > 0 else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``"n c h w -> n d"``."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
