"""The rewritten grouped Conv4 block equals the plain layers in value and in derivatives of order 1-3.

Float64 against ``relu(maxpool(batch_norm(conv(x))))`` written with plain functional layers, for
every form the block can take (patch moments for data input; pooling before normalising with the
grouped convolution's own double backward), with negative batch-norm scales (the sign fold) and
without (its fast path), odd map sizes (the pool drops the last row and column but the statistics
keep them), both memory layouts, and images with flat regions (exact ties inside pooling windows).
"""

import pytest
import torch
import torch.nn.functional as F

from metalab.adapt import conv_block
from metalab.adapt.conv_block import conv_bn_pool_relu

TASKS, IN_CH, OUT_CH = 3, 2, 4


def plain_block(x, weight, bias, gamma, beta, groups):
    """The block as written in textbooks. Batch norm from primitive ops: native batch norm has no
    third derivative (it equals this one to the first two, which tests/adapt/test_meta_gradients.py
    checks through learn2learn)."""
    z = F.conv2d(x, weight, bias, padding=1, groups=groups)
    mean = z.mean((0, 2, 3), keepdim=True)
    var = (z - mean).square().mean((0, 2, 3), keepdim=True)
    z = (z - mean) * torch.rsqrt(var + 1e-5) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    return F.relu(F.max_pool2d(z, 2))


def block_inputs(side: int, channels_last: bool, x_grad: bool, flat: bool, positive_scales: bool = False):
    g = torch.Generator().manual_seed(side + 10 * channels_last + 100 * x_grad + 1000 * flat)
    x = torch.rand(5, TASKS * IN_CH, side, side, generator=g, dtype=torch.float64)
    if flat:  # Omniglot-like: a blank background, so windows hold exactly equal values
        x = (x > 0.7).double()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(x_grad)
    weight = torch.randn(TASKS * OUT_CH, IN_CH, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(TASKS * OUT_CH, generator=g, dtype=torch.float64)
    gamma = torch.randn(TASKS * OUT_CH, generator=g, dtype=torch.float64)
    gamma[:2] = torch.tensor([-1.5, 2.0], dtype=torch.float64)  # both signs for sure (gamma = 0: a kink, see module)
    if positive_scales:  # the block's fast path: no sign to fold into the convolution
        gamma = gamma.abs()
    beta = torch.randn(TASKS * OUT_CH, generator=g, dtype=torch.float64)
    params = [p.requires_grad_() for p in (weight, bias, gamma, beta)]
    return x, params


def derivatives(out, wrt, order: int, seed: int = 0):
    """Values of order 1..``order`` derivatives of a random scalar function of ``out``, each taken of
    a random projection of the previous ones, so every order is exercised in full."""
    g = torch.Generator().manual_seed(seed)
    scalar = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + (out**2).sum()
    results = []
    for _ in range(order):
        grads = torch.autograd.grad(scalar, wrt, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(w) if d is None else d for d, w in zip(grads, wrt)]
        results.append(grads)
        scalar = sum((d * torch.randn(d.shape, generator=g, dtype=d.dtype)).sum() + (d**2).sum() for d in grads)
    return results


def relative(a, b) -> float:
    scale = max(max(y.abs().max().item() for y in b), 1e-300)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale


@pytest.mark.parametrize("side", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("form", ["patch_moments", "pool_first", "plain"])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("positive_scales", [False, True])
def test_block_equals_plain_layers_to_third_order(side, channels_last, form, flat, positive_scales):
    x, params = block_inputs(
        side, channels_last, x_grad=form == "pool_first", flat=flat, positive_scales=positive_scales
    )
    wrt = params + ([x] if x.requires_grad else [])
    ours = conv_bn_pool_relu(
        x, *params, groups=TASKS, patch_moments=form == "patch_moments", twice_differentiable=form != "plain"
    )
    ref = plain_block(x, *params, groups=TASKS)
    assert ours.shape == ref.shape == (5, TASKS * OUT_CH, side // 2, side // 2)
    assert (ours - ref).abs().max() < 1e-12
    orders = 2 if form == "plain" else 3  # the plain form is native batch norm: no third derivative
    for k, (a, b) in enumerate(zip(derivatives(ours, wrt, orders), derivatives(ref, wrt, orders)), start=1):
        assert relative(a, b) < 1e-10, f"order {k}"


def test_patch_moments_fall_back_when_the_input_needs_a_gradient():
    """The patch form gives no input gradient; with an input that needs one the block must not use it."""
    x, params = block_inputs(8, False, x_grad=True, flat=False)
    ours = conv_bn_pool_relu(x, *params, groups=TASKS, patch_moments=True)
    (gx,) = torch.autograd.grad(ours.square().sum(), [x])
    (ref_gx,) = torch.autograd.grad(plain_block(x, *params, groups=TASKS).square().sum(), [x])
    assert relative([gx], [ref_gx]) < 1e-10


@pytest.mark.parametrize("form", ["patch_moments", "pool_first"])
def test_block_under_bf16_autocast_is_as_close_as_native_layers(form):
    """Under bf16 autocast the rewritten block's values and weight gradients are about as far from the
    float32 ones as the native layers' under the same autocast, and its second derivative is finite."""
    x, params = block_inputs(8, True, x_grad=form == "pool_first", flat=False)
    x32 = x.detach().float().requires_grad_(x.requires_grad)
    params32 = [p.detach().float().requires_grad_() for p in params]
    exact = plain_block(x32, *params32, groups=TASKS)
    (gw_exact,) = torch.autograd.grad(exact.square().sum(), [params32[0]])
    errors = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, kwargs in {
            "ours": {"patch_moments": form == "patch_moments", "twice_differentiable": True},
            "native": {},
        }.items():
            out = conv_bn_pool_relu(x32, *params32, groups=TASKS, **kwargs)
            (gw,) = torch.autograd.grad(out.float().square().sum(), [params32[0]], create_graph=name == "ours")
            errors[name] = (relative([out.float()], [exact]), relative([gw], [gw_exact]))
            if name == "ours":
                assert gw.dtype == torch.float32
                (second,) = torch.autograd.grad(gw.square().sum(), [params32[2]])  # the bf16 double backward
                assert torch.isfinite(second).all() and second.abs().max() > 0
    for ours, native in zip(errors["ours"], errors["native"]):
        assert ours <= 2 * native + 1e-3, errors


@pytest.mark.parametrize("images_per_chunk", [1, 2])
def test_first_block_in_cache_sized_chunks_is_exact(monkeypatch, images_per_chunk):
    """The patch form runs its full-resolution maps in chunks of images (5 = 2 + 2 + 1 here)."""
    x, params = block_inputs(8, True, x_grad=False, flat=True)
    monkeypatch.setattr(conv_block, "_CACHE_ELEMENTS", images_per_chunk * TASKS * OUT_CH * 8 * 8)
    assert conv_block._images_per_chunk(TASKS * OUT_CH, 8, 8) == images_per_chunk
    ours = conv_bn_pool_relu(x, *params, groups=TASKS, patch_moments=True)
    ref = plain_block(x, *params, groups=TASKS)
    assert (ours - ref).abs().max() < 1e-12
    for k, (a, b) in enumerate(zip(derivatives(ours, params, 3), derivatives(ref, params, 3)), start=1):
        assert relative(a, b) < 1e-10, f"order {k}"


def plain_strided_block(x, weight, bias, gamma, beta, groups, stride):
    """``relu(batch_norm(conv(x)))`` with a strided convolution and no pooling (Finn et al.'s Omniglot
    block), batch norm from primitive ops as in :func:`plain_block`."""
    z = F.conv2d(x, weight, bias, stride=stride, padding=1, groups=groups)
    mean = z.mean((0, 2, 3), keepdim=True)
    var = (z - mean).square().mean((0, 2, 3), keepdim=True)
    return F.relu((z - mean) * torch.rsqrt(var + 1e-5) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1))


@pytest.mark.parametrize("side", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("form", ["patch_moments", "twice_differentiable", "plain"])
@pytest.mark.parametrize("stride", [1, 2])
def test_block_without_pooling_equals_plain_layers_to_third_order(side, channels_last, form, stride):
    """No pooling, stride 1 or 2 (7 -> 4 with stride 2 and padding 1): every form equals the plain
    layers; the patch form is not used without pooling, so ``patch_moments`` must fall back exactly."""
    x, params = block_inputs(side, channels_last, x_grad=form == "twice_differentiable", flat=True)
    wrt = params + ([x] if x.requires_grad else [])
    ours = conv_bn_pool_relu(
        x,
        *params,
        groups=TASKS,
        stride=stride,
        pool=False,
        patch_moments=form == "patch_moments",
        twice_differentiable=form != "plain",
    )
    ref = plain_strided_block(x, *params, groups=TASKS, stride=stride)
    out_side = (side - 1) // stride + 1
    assert ours.shape == ref.shape == (5, TASKS * OUT_CH, out_side, out_side)
    assert (ours - ref).abs().max() < 1e-12
    orders = 2 if form in ("plain", "patch_moments") else 3  # native batch norm: no third derivative
    for k, (a, b) in enumerate(zip(derivatives(ours, wrt, orders), derivatives(ref, wrt, orders)), start=1):
        assert relative(a, b) < 1e-10, f"order {k}"
