"""Meta-gradients of the batched engine equal the package's serial reference and learn2learn's MAML.

Float64, for both networks of the MAML family: a tiny pooled Conv4 (learn2learn's MAML wrapped around
the same module) and a tiny strided Conv4 holding the weights of learn2learn's own ``OmniglotCNN``
(Finn et al. 2017's Omniglot network; learn2learn runs its module, we run ours). First and second
order, one and several inner steps, both memory layouts. The reference itself is also held against
learn2learn, so the oracle is checked independently. This is the test that catches a wrong
second-order path (e.g. native batch norm under vmap, measured ~6% off with torch 2.13, an earlier pin).
"""

import pytest
import torch
import torch.nn.functional as F

l2l = pytest.importorskip("learn2learn")  # a peer, installed by scripts/install.sh; the parity tests need it

from metalab.adapt import reference  # noqa: E402 (after the peer's importorskip)
from metalab.learners.meta.maml import MAML  # noqa: E402
from metalab.models.conv4 import Conv4, strided_conv4_like  # noqa: E402

TASKS, WAY, SHOT, QUERY = 3, 3, 2, 2
SIDE = {"pooled": 8, "strided": 28}  # learn2learn's OmniglotCNN takes 28x28 images only


def networks(kind: str):
    """(our module, learn2learn's module, {our parameter name: learn2learn's}) with equal weights."""
    torch.manual_seed(0)
    if kind == "pooled":
        ours = Conv4(in_channels=1, hidden=4, blocks=2, out_features=WAY, image_size=SIDE[kind]).double()
        return ours, ours, {n: n for n, _ in ours.named_parameters()}
    theirs = l2l.vision.models.OmniglotCNN(output_size=WAY, hidden_size=4, layers=4).double()
    with torch.no_grad():  # learn2learn's head starts at N(0, 1) weights: tame it so 3 steps stay well-conditioned
        theirs.classifier.weight.mul_(0.3)
    ours = strided_conv4_like(theirs)
    return ours, theirs, {n: learn2learn_name(n) for n, _ in ours.named_parameters()}


def learn2learn_name(name: str) -> str:
    """``features.i.0.weight`` -> ``base.i.conv.weight``, ``features.i.1.*`` -> ``base.i.normalize.*``,
    ``head.*`` -> ``classifier.*``."""
    if name.startswith("head."):
        return "classifier." + name.removeprefix("head.")
    _, block, layer, rest = name.split(".")
    return f"base.{block}.{'conv' if layer == '0' else 'normalize'}.{rest}"


def episode_batch(kind: str) -> dict:
    g, side = torch.Generator().manual_seed(1), SIDE[kind]
    return {
        "support": torch.randn(TASKS, WAY * SHOT, 1, side, side, generator=g, dtype=torch.float64),
        "support_labels": torch.arange(WAY).repeat_interleave(SHOT).expand(TASKS, -1).clone(),
        "query": torch.randn(TASKS, WAY * QUERY, 1, side, side, generator=g, dtype=torch.float64),
        "query_labels": torch.arange(WAY).repeat_interleave(QUERY).expand(TASKS, -1).clone(),
    }


def ours(model, batch, steps, first_order, lr=0.3, channels_last=False, adapt="all", engine="auto"):
    learner = MAML(
        model,
        optimizer=torch.optim.SGD,
        inner_steps=steps,
        inner_lr=lr,
        first_order=first_order,
        channels_last=channels_last,
        adapt=adapt,
        engine=engine,
    )
    learner.train()
    loss, _ = learner.training_loss(batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


def serial_reference(model, batch, steps, first_order, lr=0.3, adapt="all"):
    """The package's specification of the MAML step (metalab.adapt.reference)."""
    names = [n for n, _ in model.named_parameters() if n.startswith("head.")] if adapt == "head" else None
    loss = reference.meta_loss(model, batch, steps, lr, first_order, names)
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def learn2learn_reference(module, names, batch, steps, first_order, lr=0.3):
    """learn2learn's MAML on its module; gradients returned in the order of our parameter ``names``."""
    maml = l2l.algorithms.MAML(module, lr=lr, first_order=first_order)
    losses = []
    for t in range(TASKS):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(batch["support"][t]), batch["support_labels"][t]))
        losses.append(F.cross_entropy(learner(batch["query"][t]), batch["query_labels"][t]))
    loss = torch.stack(losses).mean()
    theirs = dict(module.named_parameters())
    grads = dict(zip(theirs, torch.autograd.grad(loss, list(theirs.values()))))
    return loss.detach(), [grads[names[n]] for n in names]


def max_relative_error(a, b):
    """Largest entry-wise difference relative to the largest reference gradient entry.

    Normalised globally, not per tensor: conv biases before batch norm have exactly zero gradient in
    exact arithmetic (~1e-17 in float64), where a per-tensor ratio would only compare rounding noise.
    """
    scale = max(y.abs().max().item() for y in b)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale


@pytest.mark.parametrize("kind", ["pooled", "strided"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_serial_reference_and_learn2learn(kind, channels_last, steps, first_order):
    model, theirs, names = networks(kind)
    batch = episode_batch(kind)
    loss, grads = ours(model, batch, steps, first_order, channels_last=channels_last)
    ref_loss, ref_grads = serial_reference(model, batch, steps, first_order)
    l2l_loss, l2l_grads = learn2learn_reference(theirs, names, batch, steps, first_order)
    assert torch.allclose(loss, ref_loss, rtol=1e-12) and torch.allclose(loss, l2l_loss, rtol=1e-12)
    assert max_relative_error(grads, ref_grads) < 1e-10
    assert max_relative_error(grads, l2l_grads) < 1e-10
    assert max_relative_error(ref_grads, l2l_grads) < 1e-10  # the oracle, against an independent code


@pytest.mark.parametrize("kind", ["pooled", "strided"])
def test_second_order_differs_from_first_order(kind):
    """Guards the test above: the two orders must really give different meta-gradients here."""
    model, _, _ = networks(kind)
    batch = episode_batch(kind)
    _, second = ours(model, batch, 2, first_order=False)
    _, first = ours(model, batch, 2, first_order=True)
    assert max_relative_error(second, first) > 1e-3


@pytest.mark.parametrize("kind", ["pooled", "strided"])
def test_anil_adapts_only_the_head(kind):
    model, _, _ = networks(kind)
    batch = episode_batch(kind)
    _, grads = ours(model, batch, 3, first_order=False, adapt="head")
    _, ref = serial_reference(model, batch, 3, first_order=False, adapt="head")
    assert max_relative_error(grads, ref) < 1e-10


@pytest.mark.parametrize("adapt", ["all", "head"])
def test_serial_engine_equals_the_grouped_one(adapt):
    """``learner.engine=serial`` (the reference as the learner's path) gives the grouped path's loss and
    meta-gradient, ANIL included."""
    model, _, _ = networks("strided")
    batch = episode_batch("strided")
    loss, grads = ours(model, batch, 2, first_order=False, adapt=adapt)
    serial_loss, serial_grads = ours(model, batch, 2, first_order=False, adapt=adapt, engine="serial")
    assert torch.allclose(loss, serial_loss, rtol=1e-12)
    assert max_relative_error(grads, serial_grads) < 1e-10


@pytest.mark.parametrize("kind", ["pooled", "strided"])
def test_serial_engine_tests_like_the_grouped_one(kind):
    """At validation and test (module in eval mode) the serial engine adapts and classifies with batch
    statistics as the grouped path does, and leaves the running averages untouched. Before this held,
    the serial engine normalised with running averages nobody trained and scored chance on Omniglot."""
    model, _, _ = networks(kind)
    batch = episode_batch(kind)
    with torch.no_grad():  # running averages far from any batch's statistics: using them would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(0.01)
    before = {n: b.clone() for n, b in model.named_buffers()}
    logits = {}
    for engine in ("auto", "serial"):
        learner = MAML(
            model, optimizer=torch.optim.SGD, inner_lr=0.3, eval_inner_steps=2, channels_last=False, engine=engine
        )
        learner.eval()
        logits[engine] = learner.query_logits(batch)
    assert torch.allclose(logits["serial"], logits["auto"], rtol=0, atol=1e-10)
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    assert not model.training and all(
        m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_float32_agreement_is_reported():
    """Float32 meta-gradients stay close to the float64 ones (printed for the record)."""
    model, _, _ = networks("pooled")
    batch = episode_batch("pooled")
    _, ref = serial_reference(model, batch, 2, first_order=False)
    model32, _, _ = networks("pooled")
    batch32 = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    _, grads32 = ours(model32.float(), batch32, 2, first_order=False)
    err = max_relative_error([g.double() for g in grads32], ref)
    print(f"float32 vs float64 meta-gradient max relative error: {err:.2e}")
    assert err < 1e-4
