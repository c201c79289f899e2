"""Meta-gradients of the batched engine equal a serial per-task reference and learn2learn's MAML.

Float64, tiny Conv4 with batch norm (per-task batch statistics), first and second order, one and
several inner steps. This is the test that catches a wrong second-order path (e.g. native batch
norm under vmap, measured ~6% off in torch 2.13).
"""

import learn2learn as l2l
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalab.learners.meta.maml import MAML
from metalab.models.conv4 import Conv4

TASKS, WAY, SHOT, QUERY, SIDE = 3, 3, 2, 2, 8


def tiny_conv4() -> Conv4:
    torch.manual_seed(0)
    return Conv4(in_channels=1, hidden=4, blocks=2, out_features=WAY, image_size=SIDE).double()


def episode_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "support": torch.randn(TASKS, WAY * SHOT, 1, SIDE, SIDE, generator=g, dtype=torch.float64),
        "support_labels": torch.arange(WAY).repeat_interleave(SHOT).expand(TASKS, -1).clone(),
        "query": torch.randn(TASKS, WAY * QUERY, 1, SIDE, SIDE, generator=g, dtype=torch.float64),
        "query_labels": torch.arange(WAY).repeat_interleave(QUERY).expand(TASKS, -1).clone(),
    }


def ours(model, batch, steps, first_order, lr=0.3, channels_last=False, adapt="all"):
    learner = MAML(model, optimizer=torch.optim.SGD, inner_steps=steps, inner_lr=lr, first_order=first_order,
                   channels_last=channels_last, adapt=adapt)
    learner.train()
    loss, _ = learner.training_loss(batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


def serial_reference(model, batch, steps, first_order, lr=0.3, adapt="all"):
    """Task after task with functional_call (no vmap, no grouping): the definition of MAML."""
    init = dict(model.named_parameters())
    names = [n for n in init if n.startswith("head.")] if adapt == "head" else list(init)
    losses = []
    for t in range(TASKS):
        params = dict(init)
        for _ in range(steps):
            out = functional_call(model, params, (batch["support"][t],))
            loss = F.cross_entropy(out, batch["support_labels"][t])
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order)
            params.update({n: params[n] - lr * (g.detach() if first_order else g) for n, g in zip(names, grads)})
        out = functional_call(model, params, (batch["query"][t],))
        losses.append(F.cross_entropy(out, batch["query_labels"][t]))
    loss = torch.stack(losses).mean()
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def learn2learn_reference(model, batch, steps, first_order, lr=0.3):
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)
    losses = []
    for t in range(TASKS):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(batch["support"][t]), batch["support_labels"][t]))
        losses.append(F.cross_entropy(learner(batch["query"][t]), batch["query_labels"][t]))
    loss = torch.stack(losses).mean()
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def max_relative_error(a, b):
    """Largest entry-wise difference relative to the largest reference gradient entry.

    Normalised globally, not per tensor: conv biases before batch norm have exactly zero gradient in
    exact arithmetic (~1e-17 in float64), where a per-tensor ratio would only compare rounding noise.
    """
    scale = max(y.abs().max().item() for y in b)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_serial_and_learn2learn(steps, first_order):
    model, batch = tiny_conv4(), episode_batch()
    loss, grads = ours(model, batch, steps, first_order)
    ref_loss, ref_grads = serial_reference(model, batch, steps, first_order)
    l2l_loss, l2l_grads = learn2learn_reference(model, batch, steps, first_order)
    assert torch.allclose(loss, ref_loss, rtol=1e-12) and torch.allclose(loss, l2l_loss, rtol=1e-12)
    assert max_relative_error(grads, ref_grads) < 1e-10
    assert max_relative_error(grads, l2l_grads) < 1e-10


def test_second_order_differs_from_first_order():
    """Guards the test above: the two orders must really give different meta-gradients here."""
    model, batch = tiny_conv4(), episode_batch()
    _, second = ours(model, batch, 2, first_order=False)
    _, first = ours(model, batch, 2, first_order=True)
    assert max_relative_error(second, first) > 1e-3


def test_channels_last_path_is_exact():
    model, batch = tiny_conv4(), episode_batch()
    _, grads = ours(model, batch, 2, first_order=False, channels_last=True)
    _, ref = serial_reference(model, batch, 2, first_order=False)
    assert max_relative_error(grads, ref) < 1e-10


def test_anil_adapts_only_the_head():
    model, batch = tiny_conv4(), episode_batch()
    _, grads = ours(model, batch, 3, first_order=False, adapt="head")
    _, ref = serial_reference(model, batch, 3, first_order=False, adapt="head")
    assert max_relative_error(grads, ref) < 1e-10


def test_float32_agreement_is_reported():
    """Float32 meta-gradients stay close to the float64 ones (printed for the record)."""
    model, batch = tiny_conv4(), episode_batch()
    _, ref = serial_reference(model, batch, 2, first_order=False)
    model32 = tiny_conv4().float()
    batch32 = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    _, grads32 = ours(model32, batch32, 2, first_order=False)
    err = max_relative_error([g.double() for g in grads32], ref)
    print(f"float32 vs float64 meta-gradient max relative error: {err:.2e}")
    assert err < 1e-4
