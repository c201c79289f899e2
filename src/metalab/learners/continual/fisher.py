"""Exact diagonal Fisher information, layer by layer: ``F = (1/N) sum_n g_n ** 2`` with per-sample ``g_n``.

Why not the usual shortcut: many implementations (Avalanche's EWC among them) square the gradient of a
*mini-batch mean* loss, ``(mean_n g_n) ** 2``, which drops every cross-sample variance term and is far
from the Fisher (measured ~97% relative L2 error on reduced ResNet-18). A per-sample backward loop is
exact but slow (~2.8x). Here one forward and one backward give, for every Linear / Conv2d / BatchNorm
layer, its input activations ``a`` and the gradient ``delta`` of the summed per-sample losses w.r.t. its
output. Because sample ``n`` only influences its own loss, ``delta_n`` is that sample's output gradient,
and the per-sample weight gradient follows in closed form:

- Linear: ``g_n = delta_n a_n^T`` so ``sum_n g_n^2 = (delta^2)^T (a^2)``, one matmul (where Triton runs,
  the fused ``kernels.linear_fisher`` / ``linear_fisher_bias``, which square the tiles as they load them).
- Conv2d: ``g_n = delta_n @ unfold(a_n)^T`` (``"n o l, n k l -> n o k"``), a batched matmul, or for large
  feature maps the convolution's weight backward with samples as groups; squared and accumulated in
  cache-sized blocks of samples.
- BatchNorm (eval mode, running statistics): ``g_n(gamma) = sum_hw delta * x_hat``, ``g_n(beta) = sum_hw delta``.

The backward only asks for gradients w.r.t. layer outputs, so the weight gradients of the ordinary
backward are never computed: the closed forms replace them at about the same cost.

Batch norm couples the samples of a batch in training mode, so per-sample gradients only exist with
running statistics: the Fisher is computed in eval mode, which is also how the model is used at test time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metalab import kernels
from metalab.errors import ConfigError

SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
# Elements of one block of per-sample conv weight gradients ("n o k"): 2 MB in float32, so a block is
# still in cache when it is squared. Both constants were tuned with benchmarks/continual/fisher_speed.py
# (--block-elements, --grouped-min-positions) on reduced ResNet-18; 16 MB blocks and 256 positions,
# the earlier setting, were about 10% slower on the AMD EPYC of 2026-11-30.
BLOCK_ELEMENTS = 512 * 1024
# From this many output positions on, per-sample conv gradients come from a grouped weight backward.
GROUPED_MIN_POSITIONS = 64


@dataclass
class _Call:
    module: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor


def _trainable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own trainable parameters; every one must be a supported layer type."""
    layers, unsupported = {}, []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, SUPPORTED):
            layers[name] = module
        else:
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported:
        raise ConfigError(
            f"exact Fisher supports {', '.join(t.__name__ for t in SUPPORTED)} layers; "
            f"these own trainable parameters and are not supported: {', '.join(unsupported)}"
        )
    return layers


def _sample_or_true_labels(
    logits: torch.Tensor, labels: torch.Tensor, sampled: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Empirical Fisher uses the true labels; the (true) Fisher draws labels from the model's softmax."""
    if not sampled:
        return labels
    probs = torch.softmax(logits.detach().double(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def per_sample_squared_grads(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    sampled: bool = False,
    generator: torch.Generator | None = None,
    logit_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{param name: sum_n g_n ** 2}`` over the ``n`` examples of ``x`` (one forward, one backward).

    ``logit_mask [n_classes]``: if given, the loss only sees these outputs (e.g. the classes seen so far).
    The model must be in the mode it should be differentiated in (eval for batch norm, see module doc).
    """
    layers = _trainable_layers(model)
    calls: dict[str, _Call] = {}
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if name in calls:
                raise ConfigError(
                    f"layer {name} is called more than once per forward; the exact per-sample "
                    "Fisher needs each layer used once (use fisher on a model without weight sharing)"
                )
            calls[name] = _Call(module, inputs[0].detach(), output)

        return hook

    for name, module in layers.items():
        hooks.append(module.register_forward_hook(record(name)))
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    if logit_mask is not None:
        logits = logits[:, logit_mask]
    targets = _sample_or_true_labels(logits, labels, sampled, generator)
    loss = F.cross_entropy(logits, targets, reduction="sum")  # sum: d loss / d out_n is sample n's own gradient
    names = [n for n in layers if n in calls and calls[n].output.requires_grad]
    deltas = torch.autograd.grad(loss, [calls[n].output for n in names])
    squared: dict[str, torch.Tensor] = {}
    for name, delta in zip(names, deltas):
        call = calls[name]
        for pname, value in _layer_squared_grads(call.module, call.inputs, delta).items():
            param = getattr(call.module, pname)
            if param is not None and param.requires_grad:
                squared[f"{name}.{pname}" if name else pname] = value
    return squared


def _layer_squared_grads(module: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_n g_n^2`` for the parameters of one layer, from its input ``a`` and output gradient ``delta``."""
    if isinstance(module, nn.Linear):
        if a.dim() == 2:  # "n i", "n o"
            if kernels.triton_runs(a.device):  # squares the tiles as it loads them: no [n, i] or [n, o] copies
                out = {"weight": kernels.linear_fisher(a.contiguous(), delta.contiguous()).to(delta.dtype)}
                if module.bias is not None:
                    out["bias"] = kernels.linear_fisher_bias(delta.contiguous()).to(delta.dtype)
                return out
            out = {"weight": delta.square().t() @ a.square()}
            if module.bias is not None:
                out["bias"] = delta.square().sum(0)
            return out
        a2, d2 = a.flatten(1, -2), delta.flatten(1, -2)  # "n t i", "n t o": sum over t before squaring
        out = {"weight": torch.einsum("nto,nti->noi", d2, a2).square().sum(0)}
        if module.bias is not None:
            out["bias"] = d2.sum(1).square().sum(0)
        return out
    if isinstance(module, nn.Conv2d):
        return _conv2d_squared_grads(module, a, delta)
    return _batchnorm_squared_grads(module, a, delta)


def _conv2d_squared_grads(conv: nn.Conv2d, a: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_n g_n^2`` of a convolution's weight (and bias), in cache-sized blocks of samples.

    Per-sample weight gradients are as many numbers as ``n * out * in*k*k`` (118 MB for 128 images in the
    last stage of reduced ResNet-18), so they are made and squared block by block (``BLOCK_ELEMENTS``),
    each block accumulated with ``addcmul_`` while it is still in cache.
    Large feature maps (>= ``GROUPED_MIN_POSITIONS`` output positions) use the convolution's own weight
    backward with the block's samples as groups, which beats unfold + bmm there; small ones unfold.
    """
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.groups != 1:
        raise ConfigError(
            f"exact Fisher supports Conv2d with groups=1, zero padding given as numbers; "
            f"got groups={conv.groups}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
        )
    n, c_out, h_out, w_out = delta.shape
    c_in, (kh, kw) = conv.in_channels, conv.kernel_size
    k = c_in * kh * kw
    block = max(1, min(n, BLOCK_ELEMENTS // (c_out * k)))
    weight = torch.zeros(c_out, k, dtype=delta.dtype, device=delta.device)
    grouped = h_out * w_out >= GROUPED_MIN_POSITIONS
    for start in range(0, n, block):
        a_b, d_b = a[start : start + block], delta[start : start + block]
        m = len(d_b)
        if grouped:
            # Samples as groups: input "1 (m i) h w", output grad "1 (m o) h' w'" -> weight grad "(m o) i kh kw".
            shape_only = conv.weight.detach().repeat(m, 1, 1, 1)  # only its shape matters here
            _, per_sample, _ = torch.ops.aten.convolution_backward(
                d_b.reshape(1, m * c_out, h_out, w_out),
                a_b.reshape(1, m * c_in, *a.shape[2:]),
                shape_only,
                None,
                list(conv.stride),
                list(conv.padding),
                list(conv.dilation),
                False,
                [0, 0],
                m,
                [False, True, False],
            )
            per_sample = per_sample.view(m, c_out, k)
        else:
            cols = F.unfold(
                a_b, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
            )  # "m k l"
            per_sample = torch.bmm(d_b.reshape(m, c_out, -1), cols.transpose(1, 2))  # "m o k"
        for g in per_sample:
            weight.addcmul_(g, g)
    out = {"weight": weight.view_as(conv.weight)}
    if conv.bias is not None:
        out["bias"] = delta.sum((2, 3)).square().sum(0)
    return out


def _batchnorm_squared_grads(bn: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    if bn.training or bn.running_mean is None:
        raise ConfigError(
            "exact Fisher needs batch norm with running statistics in eval mode: in training mode "
            "the samples of a batch are coupled and per-sample gradients do not exist"
        )
    shape = [1, -1] + [1] * (a.dim() - 2)
    x_hat = (a - bn.running_mean.view(shape)) * torch.rsqrt(bn.running_var.view(shape) + bn.eps)
    dims = tuple(range(2, a.dim()))
    out = {}
    if bn.weight is not None:
        out["weight"] = (delta * x_hat).sum(dims).square().sum(0)
        out["bias"] = delta.sum(dims).square().sum(0)
    return out


@torch.no_grad()
def _zeros_like_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}


def diagonal_fisher(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sampled: bool = False,
    generator: torch.Generator | None = None,
    logit_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Exact diagonal Fisher ``E_n[g_n^2]`` over all examples of ``batches`` (``x [n, ...]``, ``y [n]``).

    Runs the model in eval mode (see module docstring) and restores its mode afterwards. Batches are the
    memory chunks: their size does not change the result.
    """
    was_training = model.training
    model.eval()
    total = _zeros_like_trainable(model)
    count = 0
    try:
        with torch.enable_grad():
            for x, y in batches:
                for name, value in per_sample_squared_grads(model, x, y, sampled, generator, logit_mask).items():
                    total[name] += value
                count += int(y.numel())
    finally:
        model.train(was_training)
    if count == 0:
        raise ConfigError("Fisher information needs at least one example; the task's training data is empty")
    return {name: value / count for name, value in total.items()}


def fisher_by_sample_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sampled: bool = False,
    generator: torch.Generator | None = None,
    logit_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Reference: one backward per example, ``E_n[g_n^2]`` (slow; tests and benchmarks only)."""
    was_training = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    try:
        for i in range(len(y)):
            logits = model(x[i : i + 1])
            if logit_mask is not None:
                logits = logits[:, logit_mask]
            target = _sample_or_true_labels(logits, y[i : i + 1], sampled, generator)
            grads = torch.autograd.grad(F.cross_entropy(logits, target), list(params.values()))
            for name, g in zip(params, grads):
                total[name] += g.square()
    finally:
        model.train(was_training)
    return {n: v / len(y) for n, v in total.items()}


def squared_batch_mean_gradient(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], train_mode: bool = True
) -> dict[str, torch.Tensor]:
    """The common approximation (Avalanche's EWC): ``mean over batches of (mean-loss gradient)^2``.

    Kept only to measure how far it is from :func:`diagonal_fisher` and what it costs; do not train with it.
    """
    was_training = model.training
    model.train(train_mode)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    n_batches = 0
    try:
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
            for name, g in zip(params, grads):
                total[name] += g.square()
            n_batches += 1
    finally:
        model.train(was_training)
    return {n: v / max(n_batches, 1) for n, v in total.items()}
