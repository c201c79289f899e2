"""Run one network with different parameters per task, for all tasks in one call.

``TaskBatchedModel(module)(params, x)`` evaluates ``module`` with parameters ``params[name]`` of
shape ``[task, *shape]`` on inputs ``x`` of shape ``[task, n, ...]`` and returns ``[task, n, ...]``.

Two implementations, chosen by the module:

- **Conv4 (grouped)**: the tasks are folded into the channel axis and every convolution runs once
  with ``groups=task``: ``"t n c h w -> n (t c) h w"``. One large grouped convolution keeps the
  CPU's matmul units busier than ``task`` small ones (learn2learn's loop) or ``vmap`` (which lowers
  to similar per-task work). Batch norm then normalises over ``[n, (t c), h, w]``: each channel of
  each task with that task's own batch statistics, exactly what MAML does (native batch norm *under
  vmap* was measured to give second-order meta-gradients wrong by ~6% with torch 2.13, an earlier pin,
  not re-measured on 2.14.1; this form is exact, tests/adapt). Each block is
  :func:`metalab.adapt.conv_block.conv_bn_pool_relu`, which
  rewrites conv -> batch norm -> pool -> ReLU into a form with the same values and derivatives but a
  cheap double backward for MAML's support pass (``twice_differentiable=True``), and takes the first
  block's statistics from the input patches.
  Running statistics are not tracked: like MAML (Finn et al. 2017), test tasks also use their own
  batch statistics (transductive batch norm).
  ``chunk_images`` > 0 runs the tasks in chunks of at most that many images (one grouped
  convolution per chunk): on CPUs a whole meta-batch's activations overflow the caches.
  A call may override it (``chunk_images=``), e.g. for the inner loop's small support sets.
  The geometry comes from the model (:func:`grouped_geometry`, checked once when the model is
  wrapped): each block is a convolution (any square kernel, stride and zero padding; bias; no
  dilation or groups), batch norm, optionally 2x2 max-pooling, and ReLU; the last map is flattened
  or averaged (``Conv4.readout``). Anything else in a Conv4 is refused with a :class:`ConfigError`
  naming the layer and what is supported; ``learner.engine=serial`` runs any model through the
  reference (:mod:`metalab.adapt.reference`).
- **Any other module (vmap)**: ``torch.func.vmap`` over ``functional_call``. Modules that cannot be
  vmapped (e.g. batch norm with running statistics) raise a :class:`ConfigError` naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import nn
from torch.func import functional_call, vmap

from metalab.adapt.conv_block import conv_bn_pool_relu
from metalab.errors import ConfigError
from metalab.models.conv4 import Conv4

Params = dict[str, torch.Tensor]

SUPPORTED_BLOCK = (
    "Conv2d (square kernel, equal stride and zero padding on both axes, bias, dilation 1, "
    "groups 1) -> BatchNorm2d (affine) -> optional MaxPool2d(2) -> ReLU"
)


@dataclass(frozen=True)
class BlockGeometry:
    """What the grouped path needs to know about one conv block of the model."""

    stride: int
    padding: int
    pool: bool
    eps: float


def grouped_geometry(module: Conv4) -> list[BlockGeometry]:
    """The geometry of every block of ``module``, or one :class:`ConfigError` naming the first layer the
    grouped path does not support and what it supports."""
    blocks = []
    for i, block in enumerate(module.features):
        layers = list(block) if isinstance(block, nn.Sequential) else [block]
        kinds = [type(layer) for layer in layers]
        pool = nn.MaxPool2d in kinds
        expected = [nn.Conv2d, nn.BatchNorm2d] + ([nn.MaxPool2d] if pool else []) + [nn.ReLU]
        expected_relu_first = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
        if kinds != expected and kinds != expected_relu_first:
            at = next(
                (k for k, (a, b) in enumerate(zip(kinds, expected)) if a is not b), min(len(kinds), len(expected))
            )
            name = f"features.{i}.{at}" if at < len(layers) else f"features.{i}"
            found = type(layers[at]).__name__ if at < len(layers) else "end of block"
            _unsupported(name, found)
        conv, norm = layers[0], layers[1]
        square = len(set(conv.kernel_size)) == 1 and len(set(conv.stride)) == 1
        padding = conv.padding if isinstance(conv.padding, tuple) else None
        if not (
            square
            and padding
            and len(set(padding)) == 1
            and conv.bias is not None
            and set(conv.dilation) == {1}
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        ):
            _unsupported(
                f"features.{i}.0",
                f"Conv2d(kernel_size={conv.kernel_size}, stride={conv.stride}, "
                f"padding={conv.padding}, dilation={conv.dilation}, groups={conv.groups}, "
                f"bias={conv.bias is not None}, padding_mode={conv.padding_mode!r})",
            )
        if not norm.affine:
            _unsupported(f"features.{i}.1", "BatchNorm2d(affine=False)")
        if pool:
            mp = next(layer for layer in layers if isinstance(layer, nn.MaxPool2d))
            if (_pair(mp.kernel_size), _pair(mp.stride), _pair(mp.padding), _pair(mp.dilation), mp.ceil_mode) != (
                (2, 2),
                (2, 2),
                (0, 0),
                (1, 1),
                False,
            ):
                _unsupported(
                    f"features.{i}.{layers.index(mp)}",
                    f"MaxPool2d(kernel_size={mp.kernel_size}, "
                    f"stride={mp.stride}, padding={mp.padding}, ceil_mode={mp.ceil_mode})",
                )
        blocks.append(BlockGeometry(conv.stride[0], padding[0], pool, norm.eps))
    return blocks


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _unsupported(layer: str, found: str) -> None:
    raise ConfigError(
        f"model layer {layer!r} is {found}, which the grouped Conv4 fast path does not support: each block must "
        f"be {SUPPORTED_BLOCK}. Use learner.engine=serial to run this model through the serial reference."
    )


class TaskBatchedModel:
    """Callable ``(params {name: [t, ...]}, x [t, n, ...]) -> [t, n, ...]`` for ``module``.

    ``body`` / ``head`` split the network for ANIL: features of the body once, then only the head
    is adapted. For Conv4 the head is ``head.*``; for other modules everything is body.
    """

    ENGINES = ("auto", "serial")

    def __init__(
        self, module: nn.Module, channels_last: bool = True, chunk_images: int = 0, engine: str = "auto"
    ) -> None:
        """``engine``: ``"auto"`` (grouped for a Conv4, vmap otherwise) or ``"serial"`` (one
        ``functional_call`` per task, as :mod:`metalab.adapt.reference`: any module, slowly)."""
        if engine not in self.ENGINES:
            raise ConfigError(f"learner.engine={engine!r} is not allowed: must be one of {self.ENGINES}")
        self.module = module
        self.channels_last = channels_last
        self.chunk_images = chunk_images
        self.serial = engine == "serial"
        self.grouped = isinstance(module, Conv4) and not self.serial
        self.geometry = grouped_geometry(module) if self.grouped else []
        self.readout = getattr(module, "readout", "flatten")
        self.head_names = {n for n, _ in module.named_parameters() if n.startswith("head.")} if self.grouped else set()

    def __call__(
        self, params: Params, x: torch.Tensor, chunk_images: int | None = None, twice_differentiable: bool = False
    ) -> torch.Tensor:
        return self.head(params, self.body(params, x, chunk_images, twice_differentiable))

    def body(
        self, params: Params, x: torch.Tensor, chunk_images: int | None = None, twice_differentiable: bool = False
    ) -> torch.Tensor:
        """``"t n ... -> t n d"`` features (everything but the head); ``chunk_images`` overrides the
        model's setting for this call; ``twice_differentiable``: the caller will differentiate the
        result twice (MAML's support pass), which picks the cheaper form of the grouped blocks."""
        if self.serial:
            return torch.stack(
                [functional_call(self.module, {k: p[t] for k, p in params.items()}, (x[t],)) for t in range(x.shape[0])]
            )
        if not self.grouped:
            return _vmapped(self.module, params, x)
        tasks, n = x.shape[:2]
        limit = self.chunk_images if chunk_images is None else chunk_images
        # Chunks of tasks keep each grouped convolution's activations small enough for the CPU caches
        # (the element-wise batch norm / ReLU / pooling are memory-bound on a whole meta-batch): with
        # 150, the 75-image query sets of two tasks go in one call.
        chunk = max(1, limit // n) if limit > 0 else tasks
        # torch.split, not slicing: the backward of a split is one concatenation of the chunks'
        # gradients, while each slice's backward writes a zero-filled full-size gradient (O(chunks^2)).
        pieces = {name: p.split(chunk) for name, p in params.items()}
        parts = [
            grouped_conv4_features(
                {name: pieces[name][k] for name in params},
                xk,
                self.geometry,
                self.channels_last,
                twice_differentiable,
                self.readout,
            )
            for k, xk in enumerate(x.split(chunk))
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def head(self, params: Params, features: torch.Tensor) -> torch.Tensor:
        """``"t n d -> t n out"``: a per-task linear layer (identity when the model has no head)."""
        if not self.head_names:
            return features
        weight, bias = params["head.weight"], params["head.bias"]  # "t out d", "t out"
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


def grouped_conv4_features(
    params: Params,
    x: torch.Tensor,
    geometry: list[BlockGeometry],
    channels_last: bool,
    twice_differentiable: bool = False,
    readout: str = "flatten",
) -> torch.Tensor:
    """Conv4 body for ``t`` tasks with tasks folded into channel groups: ``"t n c h w -> t n d"``."""
    tasks, n = x.shape[:2]
    h = rearrange(x, "t n c h w -> n (t c) h w")
    if channels_last:
        h = _channels_last(h)
    for i, block in enumerate(geometry):
        # Per-task batch statistics: channel (t, o) is normalised over (n, h, w) of its own task only.
        h = conv_bn_pool_relu(
            h,
            params[f"features.{i}.0.weight"].flatten(0, 1),  # "t o c k k" -> "(t o) c k k"
            params[f"features.{i}.0.bias"].flatten(),
            params[f"features.{i}.1.weight"].flatten(),
            params[f"features.{i}.1.bias"].flatten(),
            groups=tasks,
            eps=block.eps,
            stride=block.stride,
            padding=block.padding,
            pool=block.pool,
            patch_moments=i == 0,
            twice_differentiable=twice_differentiable,
        )
    if readout == "mean":
        return reduce(h, "n (t c) h w -> t n c", "mean", t=tasks)
    return rearrange(h, "n (t c) h w -> t n (c h w)", t=tasks)


def _channels_last(h: torch.Tensor) -> torch.Tensor:
    """A channels-last copy of ``h "n C h w"``, with channels-last strides even when ``C`` is 1.

    ``contiguous(memory_format=torch.channels_last)`` returns a one-channel tensor as it is (both
    layouts then order the elements alike), and its NCHW strides send the first convolution, and
    with it the whole network, down the slow NCHW path: one grayscale task per call (a 20-way query
    set or a 5-shot support set in a chunk of its own).
    """
    return torch.empty_like(h, memory_format=torch.channels_last).copy_(h)


def _vmapped(module: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    def one_task(p: Params, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(module, p, (xi,))

    try:
        return vmap(one_task)(params, x)
    except Exception as error:  # vmap raises many kinds; find the layer and say it plainly
        layer = _failing_layer(module, lambda: vmap(one_task)(params, x))
        raise ConfigError(
            f"model layer {layer!r} ({type(module.get_submodule(layer)).__name__ if layer else 'unknown'}) "
            f"cannot run with per-task parameters under torch.func.vmap: {str(error).splitlines()[0]}. "
            "Use layers without running statistics (e.g. batch norm with track_running_stats=False) "
            "or the grouped Conv4."
        ) from None


def _failing_layer(module: nn.Module, call: Callable[[], object]) -> str:
    """Name of the innermost submodule whose forward was running when ``call`` raised."""
    stack: list[str] = []
    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(lambda m, a, name=name: stack.append(name)))
        handles.append(sub.register_forward_hook(lambda m, a, o: stack.pop()))
    try:
        call()
    except Exception:
        return stack[-1] if stack else ""
    finally:
        for h in handles:
            h.remove()
    return ""
