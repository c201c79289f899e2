"""Conv4: four 3x3 conv blocks with batch norm, in the two layouts of the few-shot literature.

- **pooled** (the default; Vinyals et al. 2016, ProtoNets): 3x3 convs at full resolution (padding 1),
  each followed by 2x2 max-pooling; a 28x28 input ends as a 1x1 map, flattened.
- **strided** (``stride=2, pool=False, readout="mean"``; Finn et al. 2017 for Omniglot, shipped by
  learn2learn as ``learn2learn.vision.models.OmniglotCNN``): 3x3 convs with stride 2 and padding 1,
  no pooling (28 -> 14 -> 7 -> 4 -> 2), the spatial mean of the last map as the embedding. About a
  quarter of the pooled layout's multiply-adds, since the first block runs at 14x14 instead of 28x28.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.errors import require

READOUTS = ("flatten", "mean")


def conv_block(in_channels: int, out_channels: int, stride: int = 1, pool: bool = True) -> nn.Sequential:
    """3x3 conv (padding 1, ``stride``) -> batch norm -> [2x2 max pool] -> ReLU.

    The pool runs before the ReLU: ``relu(max(x)) == max(relu(x))`` exactly (ReLU is monotone), with
    the same gradients, and the ReLU then touches a quarter of the elements.
    """
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.BatchNorm2d(out_channels),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """``blocks`` conv blocks with ``hidden`` filters, then an optional linear head.

    ``out_features`` > 0 adds a linear classifier head (MAML-style); 0 returns the embedding
    (ProtoNet-style). ``in_channels`` 1 for Omniglot, 3 for colour images. ``stride`` / ``pool`` /
    ``readout`` choose the layout (module docstring): ``readout="flatten"`` keeps the last map as
    ``"(c h w)"``, ``"mean"`` averages it over ``h w``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        blocks: int = 4,
        out_features: int = 0,
        image_size: int = 28,
        stride: int = 1,
        pool: bool = True,
        readout: str = "flatten",
    ) -> None:
        super().__init__()
        require(stride in (1, 2), "model.stride", "1 or 2", stride)
        require(readout in READOUTS, "model.readout", f"one of {READOUTS}", readout)
        chans = [in_channels] + [hidden] * blocks
        self.features = nn.Sequential(*(conv_block(a, b, stride, pool) for a, b in zip(chans, chans[1:])))
        self.readout = readout
        side = image_size
        for _ in range(blocks):
            side = (side - 1) // stride + 1  # 3x3 conv, padding 1
            side = side // 2 if pool else side
        self.embedding_dim = hidden if readout == "mean" else hidden * max(side, 1) ** 2
        self.head = nn.Linear(self.embedding_dim, out_features) if out_features > 0 else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``"n c h w -> n d"``."""
        maps = self.features(x)
        return maps.mean((2, 3)) if self.readout == "mean" else maps.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def strided_conv4_like(omniglot_cnn: nn.Module) -> Conv4:
    """Our strided Conv4 holding the weights of a ``learn2learn.vision.models.OmniglotCNN`` (same layout:
    ``base.i.conv`` / ``base.i.normalize`` -> ``features.i.0`` / ``features.i.1``, ``classifier`` ->
    ``head``), for side-by-side runs and parity tests on the very same network."""
    state = omniglot_cnn.state_dict()
    blocks = sum(1 for k in state if k.endswith(".conv.weight") and k.startswith("base."))
    hidden, in_channels = state["base.0.conv.weight"].shape[:2]
    model = Conv4(
        in_channels=in_channels,
        hidden=hidden,
        blocks=blocks,
        out_features=state["classifier.weight"].shape[0],
        stride=2,
        pool=False,
        readout="mean",
    ).to(state["classifier.weight"].dtype)  # before loading: no rounding
    renamed = {}
    for key, value in state.items():
        if key.startswith("base."):
            _, i, layer, rest = key.split(".", 3)
            renamed[f"features.{i}.{0 if layer == 'conv' else 1}.{rest}"] = value
        elif key.startswith("classifier."):
            renamed["head." + key.removeprefix("classifier.")] = value
    model.load_state_dict(renamed)
    return model
