"""One Conv4 block for tasks folded into channel groups, exact to every derivative order, cheaper.

The block is ``relu(maxpool2(batchnorm(conv(x))))`` with batch statistics per channel (MAML's batch
norm); ``x`` is ``"n (t c) h w"`` and the convolution has ``groups=t``. Its geometry comes from the model:
any square kernel, stride and zero padding for the convolution, and 2x2 max-pooling or none (the
strided Omniglot network of Finn et al. 2017 has no pooling: ``relu(batchnorm(conv(x)))``). Written with the plain
layers,
MAML's second order spends much of its time outside the convolutions: batch norm's double backward
makes many element-wise passes over the full-resolution maps, and PyTorch's double backward of a
grouped convolution runs one small convolution per group (what timing the ops of a second-order
meta-step showed before this rewrite). Four rewrites remove that work; each gives
the same values and the same derivatives of every order (tests/adapt/test_conv_block.py, float64):

1. **Normalise after pooling.** In training mode batch norm maps each channel by ``y = a z + b`` with
   ``a = gamma / sigma``. Max-pooling commutes with an increasing map, and turns into min-pooling for a
   decreasing one (``gamma < 0``). Multiplying the channel's convolution weights and bias by
   ``s = sign(gamma)`` (piecewise constant, so its derivative is zero) makes every channel's map
   increasing: the block equals ``relu(|a| * maxpool(z') + beta - gamma * mu / sigma)`` with
   ``z' = conv(x; s W, s b)``. The statistics still come from the full-resolution ``z'``, but the
   normalisation, the ReLU and all their derivatives run on the 4x smaller pooled maps. When no scale
   is negative (the usual case: they start at 1) there is nothing to fold.
2. **First block: statistics from patch moments.** When ``x`` is data (no gradient wanted), the
   output of a channel is ``z = W . p + b`` over the 3x3 input patches ``p``, so its batch mean and
   variance are ``W . m + b`` and ``W C W^T`` with ``m`` and ``C`` the mean and covariance of the patches
   (``k x k``, ``k = 9 c``). No full-resolution tensor then stays in the autograd graph: the
   convolution and the pooling run inside :class:`_ConvMaxPool`, which keeps the pooling's argmax
   and differentiates through it by hand (the pooled value is linear in ``W``, ``b`` at a fixed argmax).
3. **Grouped convolution, double backward by native calls.** :class:`_GroupedConv`'s backward is a
   function (:class:`_GroupedConvBackward`) whose own backward uses ``convolution`` and
   ``convolution_backward`` with ``groups`` as is, instead of the per-group loop of
   PyTorch's generic double backward.
4. **Element-wise work with hand-written derivatives.** Pooling with the batch moments
   (:class:`_PoolMoments`) and the scale, shift and ReLU (:class:`_ScaleShiftRelu`) are functions whose
   backward is again a function with a hand-written backward, written in plain ops so that it can
   be differentiated further: each makes a few passes over its maps where the same math left to
   autograd builds a graph of many small element-wise ops, once for the inner gradient and again
   for the meta-gradient.

Without pooling, rewrite 1 has nothing to commute (the block normalises its full map) and rewrite 2 is
not used (it exists to drop full-resolution maps that pooling would discard); rewrites 3 and 4 apply.
Rewrite 2 also needs a 3x3 kernel with stride 1 and padding 1 (the patch layout it is written for).

Ties in the max-pool go to the first position of the window, as in ``max_pool2d``. At ``gamma = 0``
exactly the block has a kink in ``gamma`` (max-pooling on one side, min-pooling on the other): the
rewrite takes the derivative of the ``gamma > 0`` side, the plain layers that of the window's first
position; both are subgradients, and a learned scale is never exactly zero in practice. Under autocast the
convolutions run in the autocast dtype and the statistics in float32, as native batch norm does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_DIL = [1, 1]


def conv_bn_pool_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    groups: int,
    eps: float = 1e-5,
    *,
    stride: int = 1,
    padding: int = 1,
    pool: bool = True,
    patch_moments: bool = False,
    twice_differentiable: bool = False,
) -> torch.Tensor:
    """``"n (t c) h w -> n (t o) h' w'"``: conv (``stride``, zero ``padding``, ``groups``), batch norm with
    batch statistics, 2x2 max-pool if ``pool``, ReLU. ``weight "(t o) c k k"``; ``bias``, ``gamma``,
    ``beta`` ``"(t o)"``.

    Which form runs (all give the same values and derivatives):

    - ``patch_moments`` and ``x`` needs no gradient (the first block, on data), with pooling and a
      3x3 stride-1 padding-1 convolution: rewrites 1, 2 and 4;
    - else ``twice_differentiable`` (the caller will differentiate the result twice, as MAML's
      support pass is): rewrites 1 (with pooling), 3 and 4;
    - else the plain layers, whose fused native batch-norm backward is the cheapest when
      differentiated only once.
    """
    patch_layout = pool and stride == 1 and padding == 1 and tuple(weight.shape[-2:]) == (3, 3)
    from_patches = patch_moments and patch_layout and not x.requires_grad
    if not from_patches and not twice_differentiable:
        z = F.batch_norm(
            F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups),
            None,
            None,
            gamma,
            beta,
            training=True,
            eps=eps,
        )
        return F.relu(F.max_pool2d(z, 2) if pool else z)  # pool first: same values and gradients, 4x less ReLU work
    if not pool:
        z = _grouped_conv(x, weight, bias, groups, stride, padding)
        mean, var = _Moments.apply(z)
        scale = gamma * torch.rsqrt(var + eps)
        shift = torch.addcmul(beta, scale, mean, value=-1)
        return _ScaleShiftRelu.apply(z, scale, shift).to(z.dtype)
    nonnegative = gamma.detach() >= 0
    if bool(nonnegative.all()):  # the usual case (scales start at 1): nothing to fold
        signed_w, signed_b, abs_gamma = weight, bias, gamma
    else:
        sign = torch.where(nonnegative, 1.0, -1.0).to(gamma.dtype)
        signed_w, signed_b, abs_gamma = weight * sign.view(-1, 1, 1, 1), bias * sign, gamma * sign
    if from_patches:
        mean, var = _moments_from_patches(x, signed_w, signed_b, groups)
        pooled = _conv_max_pool(x, signed_w, signed_b, groups)
    else:
        z = _grouped_conv(x, signed_w, signed_b, groups, stride, padding)  # z' = s * conv(x): "n (t o) h w"
        pooled, mean, var = _PoolMoments.apply(z)
    scale = abs_gamma * torch.rsqrt(var + eps)  # |gamma| / sigma
    shift = torch.addcmul(beta, scale, mean, value=-1)  # mean is of z' = s z
    return _ScaleShiftRelu.apply(pooled, scale, shift).to(pooled.dtype)


class _PoolMoments(torch.autograd.Function):
    """``(maxpool2(z), mean, var)`` of ``z "n C h w"``; mean and biased variance per channel over
    ``n h w``, in float32 at least. Written by hand because its derivatives are MAML's hot path: the
    inner gradient into ``z`` is the pooling's scatter and two in-place passes here
    (:class:`_PoolMomentsBackward`), and the meta-gradient's way back through it a gather, two
    reductions and one pass, where the same math in plain ops builds a graph of many full-resolution
    element-wise ops each way."""

    @staticmethod
    def forward(ctx, z):
        ctx.set_materialize_grads(False)
        pooled, argmax = F.max_pool2d(z, 2, return_indices=True)
        mean, var = _mean_var(z)
        ctx.save_for_backward(z, argmax, mean)
        return pooled, mean, var

    @staticmethod
    def backward(ctx, grad_pooled, grad_mean, grad_var):
        z, argmax, mean = ctx.saved_tensors
        return _PoolMomentsBackward.apply(grad_pooled, grad_mean, grad_var, z, argmax, mean)


def _mean_var(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel of ``z "n C h w"`` over ``n h w``, in float32 at least."""
    zf = z if z.dtype in (torch.float32, torch.float64) else z.float()
    if _layout(zf) == torch.channels_last:  # reduced as a "(n h w) C" matrix: much faster than over dims
        rows = _rows(zf)
        mean = rows.mean(0)
        return mean, (rows - mean).square_().mean(0)
    var, mean = torch.var_mean(zf, (0, 2, 3), correction=0)
    return mean, var


class _Moments(torch.autograd.Function):
    """``(mean, var)`` of ``z`` per channel (:func:`_mean_var`): the batch statistics of a block without
    pooling, differentiated by :class:`_PoolMomentsBackward` with no pooled gradient."""

    @staticmethod
    def forward(ctx, z):
        ctx.set_materialize_grads(False)
        mean, var = _mean_var(z)
        ctx.save_for_backward(z, mean)
        return mean, var

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        if grad_mean is None and grad_var is None:
            return None
        z, mean = ctx.saved_tensors
        return _PoolMomentsBackward.apply(None, grad_mean, grad_var, z, None, mean)


class _PoolMomentsBackward(torch.autograd.Function):
    """The gradient into ``z`` of :class:`_PoolMoments`: ``spread(g_pooled) + (g_mean + 2 g_var (z - mean)) / m``
    with ``spread`` putting each pooled gradient at its window's argmax and ``m = n h w``.

    Linear in the three gradients; in ``z`` only through ``z - mean(z)`` (the argmax is piecewise
    constant). ``mean`` comes in as an input only to keep its graph for higher orders: its derivative
    is folded into ``z``'s (``c (h - mean(h))`` for adjoint ``h`` and ``c = 2 g_var / m``), so none is
    returned for it.
    """

    @staticmethod
    def forward(ctx, grad_pooled, grad_mean, grad_var, z, argmax, mean):
        ctx.set_materialize_grads(False)
        m, work = z.numel() // z.shape[1], mean.dtype  # statistics' dtype: float32 under bf16 autocast
        like_z = z if z.dtype == work else torch.empty_like(z, dtype=work)
        if grad_pooled is None:
            grad_z = torch.zeros_like(like_z)
        else:
            grad_z = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_pooled.to(work), like_z, [2, 2], [2, 2], [0, 0], [1, 1], False, argmax
            )
        offset = grad_mean / m if grad_mean is not None else None
        if grad_var is not None:
            slope = 2 * grad_var / m
            grad_z.addcmul_(z, slope.view(1, -1, 1, 1))
            offset = -slope * mean if offset is None else offset - slope * mean
        if offset is not None:
            grad_z.add_(offset.view(1, -1, 1, 1))
        ctx.save_for_backward(z, argmax, mean, grad_var)
        return grad_z.to(z.dtype)

    @staticmethod
    def backward(ctx, h):
        if h is None:
            return None, None, None, None, None, None
        z, argmax, mean, grad_var = ctx.saved_tensors
        m, needs = z.numel() // z.shape[1], ctx.needs_input_grad
        h = h.to(mean.dtype)
        h_sum = _channel_sum(h)
        d_pooled = h.flatten(2).gather(2, argmax.flatten(2)).view(argmax.shape) if needs[0] else None
        d_mean = h_sum / m if needs[1] else None
        d_var = 2 / m * (_channel_dot(h, z.to(h.dtype)) - mean * h_sum) if needs[2] else None
        d_z = None
        if needs[3] and grad_var is not None:
            slope = 2 * grad_var / m
            d_z = torch.addcmul((-slope * h_sum / m).view(1, -1, 1, 1), h, slope.view(1, -1, 1, 1))
        return d_pooled, d_mean, d_var, d_z, None, None


class _ScaleShiftRelu(torch.autograd.Function):
    """``relu(p * a + b)`` per channel (``p "n C h w"``, ``a``, ``b`` ``"C"``), with the backward of
    :class:`_ScaleShiftReluBackward`: written by hand for the same reason as :class:`_PoolMoments`."""

    @staticmethod
    def forward(ctx, p, a, b):
        ctx.set_materialize_grads(False)
        y = torch.addcmul(b.view(1, -1, 1, 1), p, a.view(1, -1, 1, 1)).relu_()
        ctx.save_for_backward(p, a, y)
        return y

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return None, None, None
        p, a, y = ctx.saved_tensors
        return _ScaleShiftReluBackward.apply(g, p, a, y)


class _ScaleShiftReluBackward(torch.autograd.Function):
    """``(dp, da, db)`` of :class:`_ScaleShiftRelu` for output gradient ``g``: with ``gm = g * (y > 0)``,
    ``dp = gm a``, ``da = sum(gm p)``, ``db = sum(gm)``. Linear in ``g``; ``dp`` linear in ``a``, ``da`` in
    ``p``; the mask is piecewise constant. ``gm`` is recomputed in the backward rather than saved, so the
    graph stays differentiable to any order."""

    @staticmethod
    def forward(ctx, g, p, a, y):
        ctx.set_materialize_grads(False)
        gm = torch.ops.aten.threshold_backward(g.to(y.dtype), y, 0)
        ctx.save_for_backward(g, p, a, y)
        return gm * a.view(1, -1, 1, 1), _channel_dot(gm, p.to(gm.dtype)), _channel_sum(gm)

    @staticmethod
    def backward(ctx, hp, ha, hb):
        g, p, a, y = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gm = torch.ops.aten.threshold_backward(g.to(y.dtype), y, 0) if needs[1] or needs[2] else None
        d_g = d_p = d_a = None
        if needs[0] and (hp is not None or ha is not None or hb is not None):
            # the adjoint of (gm a, sum(gm p), sum(gm)) for gm, then masked: "n C h w"
            d_gm = torch.zeros_like(y) if hb is None else hb.view(1, -1, 1, 1).expand_as(y)
            if ha is not None:
                d_gm = torch.addcmul(d_gm, p.to(y.dtype), ha.view(1, -1, 1, 1))
            if hp is not None:
                d_gm = torch.addcmul(d_gm, hp, a.view(1, -1, 1, 1))
            d_g = torch.ops.aten.threshold_backward(d_gm.to(y.dtype), y, 0)
        if needs[1] and ha is not None:
            d_p = gm * ha.view(1, -1, 1, 1)
        if needs[2] and hp is not None:
            d_a = _channel_dot(gm, hp.to(gm.dtype))
        return d_g, d_p, d_a, None


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``"n C h w -> (n h w) C"``: a view when ``t`` is channels-last."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    return _rows(t).sum(0) if _layout(t) == torch.channels_last else t.sum((0, 2, 3))


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum over n h w of a * b`` per channel."""
    if _layout(a) == torch.channels_last and _layout(b) == torch.channels_last:
        return torch.linalg.vecdot(_rows(a), _rows(b), dim=0)
    return (a * b).sum((0, 2, 3))


def _moments_from_patches(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``conv(x; weight, bias)`` per output channel, from the patches' moments."""
    n, tc, h, w = x.shape
    c = tc // groups
    with torch.autocast(x.device.type, enabled=False):
        # The nine shifted copies of the zero-padded input, stacked in the order of the conv weights'
        # (c, dy, dx): "t c 9 n h w" -> "t (c 9) (n h w)" (several times faster than F.unfold here).
        padded = F.pad(x.to(weight.dtype), (1, 1, 1, 1)).transpose(0, 1).reshape(groups, c, n, h + 2, w + 2)
        taps = [padded[..., dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
        patches = torch.stack(taps, dim=2).reshape(groups, c * 9, n * h * w)
        k = c * 9
        m = patches.mean(-1)  # "t k"
        centred = patches - m.unsqueeze(-1)
        cov = torch.bmm(centred, centred.transpose(1, 2)) / patches.shape[-1]  # "t k k"
        w_tok = weight.reshape(groups, -1, k)  # "t o k"
        mean = torch.einsum("tok,tk->to", w_tok, m).flatten() + bias
        var = torch.einsum("tok,tkl,tol->to", w_tok, cov, w_tok).flatten()
    return mean, var


def _autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The inputs in the autocast dtype when autocast is on (custom functions are not autocast)."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) for t in tensors)


def _grouped_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, stride: int = 1, padding: int = 1
) -> torch.Tensor:
    return _GroupedConv.apply(*_autocast_inputs(x, weight, bias), (groups, stride, padding))


def _conv_max_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    return _ConvMaxPool.apply(*_autocast_inputs(x, weight, bias), groups)


def _conv(x, weight, bias, groups, stride=1, padding=1):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)


def _conv_grads(grad, x, weight, groups, mask, stride=1, padding=1):
    """``convolution_backward`` of ``conv(x, weight)`` for output gradient ``grad``: (dx, dW, db) per mask."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]], [stride, stride], [padding, padding], _DIL, False, [0, 0], groups, mask
    )


class _GroupedConv(torch.autograd.Function):
    """``conv(x, weight, bias)`` whose backward is :class:`_GroupedConvBackward` (differentiable again);
    ``geometry`` is ``(groups, stride, padding)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, geometry):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        return _conv(x, weight, bias, *geometry)

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None
        x, weight = ctx.saved_tensors
        gx, gw, gb = _GroupedConvBackward.apply(grad, x, weight, ctx.geometry, ctx.needs_input_grad[0])
        return gx, gw, gb, None


class _GroupedConvBackward(torch.autograd.Function):
    """``(dx, dW, db)`` of a grouped convolution for output gradient ``grad``.

    All three are linear in ``grad``; ``dx`` is linear in ``W`` and ``dW`` in ``x``. So for adjoints
    ``(hx, hW, hb)``: ``d/dgrad = conv(hx, W) + conv(x, hW) + hb``, ``d/dx`` is the input gradient of
    ``conv(x, hW)`` and ``d/dW`` the weight gradient of ``conv(hx, W)``, both for output gradient ``grad``.
    """

    @staticmethod
    def forward(ctx, grad, x, weight, geometry, input_grad):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(grad, x, weight)
        ctx.geometry = geometry
        groups, stride, padding = geometry
        gx, gw, gb = _conv_grads(grad, x, weight, groups, [input_grad, True, True], stride, padding)
        return gx, gw, gb

    @staticmethod
    def backward(ctx, hx, hw, hb):
        grad, x, weight = ctx.saved_tensors
        groups, stride, padding = geometry = ctx.geometry
        terms, bias = [], hb  # hb rides as the bias of the first convolution
        if hx is not None:
            terms.append(_conv(hx, weight, bias, *geometry))
            bias = None
        if hw is not None:
            terms.append(_conv(x, hw, bias, *geometry))
            bias = None
        if bias is not None:
            terms.append(bias.view(1, -1, 1, 1).expand_as(grad))
        d_grad = terms[0].add_(terms[1]) if len(terms) == 2 else terms[0] if terms else None  # 2: both fresh
        d_x = (
            _conv_grads(grad, x, hw, groups, [True, False, False], stride, padding)[0]
            if hw is not None and ctx.needs_input_grad[1]
            else None
        )
        d_w = (
            _conv_grads(grad, hx, weight, groups, [False, True, False], stride, padding)[1]
            if hx is not None and ctx.needs_input_grad[2]
            else None
        )
        return d_grad, d_x, d_w, None, None


# Full-resolution maps of the first block are produced and consumed in chunks of about this many
# elements (4 MB in float32), so they stay in the CPU caches: on the 2-core EPYC the whole MAML
# meta-step ran faster with 4 MB chunks (10 Omniglot query images of two tasks) than with 8 MB
# (benchmarks/meta/conv_block_ab.py, figures in benchmarks/meta/results.md).
_CACHE_ELEMENTS = 2**20


def _layout(t: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        else torch.contiguous_format
    )


def _images_per_chunk(channels: int, height: int, width: int) -> int:
    """Images per chunk of full-resolution maps ``"n channels height width"`` (``_CACHE_ELEMENTS``)."""
    return max(1, _CACHE_ELEMENTS // (channels * height * width))


class _ConvMaxPool(torch.autograd.Function):
    """``maxpool2(conv(x, weight, bias))`` for data ``x`` (no gradient): keeps the argmax, not the maps."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups):
        ctx.set_materialize_grads(False)
        n, _, h, w = x.shape
        step = _images_per_chunk(weight.shape[0], h, w)
        pooled = argmax = None
        for start in range(0, n, step):  # chunks of images, pooled into one output (n-slices keep the layout)
            full = _conv(x[start : start + step], weight, bias, groups)
            if pooled is None:
                shape, layout = (n, full.shape[1], h // 2, w // 2), _layout(full)
                pooled = torch.empty(shape, dtype=full.dtype, device=x.device, memory_format=layout)
                argmax = torch.empty(shape, dtype=torch.long, device=x.device, memory_format=layout)
            torch.ops.aten.max_pool2d_with_indices.out(
                full,
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                False,
                out=pooled[start : start + step],
                indices=argmax[start : start + step],
            )
        ctx.save_for_backward(x, argmax)
        ctx.groups = groups
        return pooled

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None
        x, argmax = ctx.saved_tensors
        gw, gb = _ConvMaxPoolBackward.apply(grad, x, argmax, ctx.groups)
        return None, gw, gb, None


class _ConvMaxPoolBackward(torch.autograd.Function):
    """``(dW, db)`` of :class:`_ConvMaxPool`: the gradient goes to each window's argmax, then through the
    convolution. Linear in ``grad``; its adjoint maps ``(hW, hb)`` to ``conv(x, hW, hb)`` at the argmax."""

    @staticmethod
    def forward(ctx, grad, x, argmax, groups):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, argmax)
        ctx.groups = groups
        layout = _layout(argmax)  # the forward's maps' layout
        grad = grad.contiguous(memory_format=layout)
        channels = argmax.shape[1]
        like_weight = torch.empty(channels, x.shape[1] // groups, 3, 3, dtype=grad.dtype, device=grad.device)
        step = _images_per_chunk(channels, x.shape[2], x.shape[3])
        gw = gb = None
        for gc, xc, ic in zip(grad.split(step), x.split(step), argmax.split(step)):
            like_full = torch.empty(
                (xc.shape[0], channels, *xc.shape[2:]), dtype=grad.dtype, device=grad.device, memory_format=layout
            )
            spread = torch.ops.aten.max_pool2d_with_indices_backward(
                gc, like_full, [2, 2], [2, 2], [0, 0], [1, 1], False, ic
            )
            _, w_part, b_part = _conv_grads(spread, xc, like_weight, groups, [False, True, True])
            gw, gb = (w_part, b_part) if gw is None else (gw + w_part, gb + b_part)
        return gw, gb

    @staticmethod
    def backward(ctx, hw, hb):
        if hw is None and hb is None:
            return None, None, None, None
        x, argmax = ctx.saved_tensors
        if hw is None:
            hw = torch.zeros(argmax.shape[1], x.shape[1] // ctx.groups, 3, 3, dtype=hb.dtype, device=hb.device)
        step = _images_per_chunk(argmax.shape[1], x.shape[2], x.shape[3])
        parts = [
            _conv(xc, hw, hb, ctx.groups).flatten(2).gather(2, ic.flatten(2)).view(ic.shape)
            for xc, ic in zip(x.split(step), argmax.split(step))
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts), None, None, None
