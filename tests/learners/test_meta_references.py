"""Reptile's outer update and Meta-SGD's rate gradient against serial, one-task-at-a-time references.

The learners adapt every task of a meta-batch at once (stacked parameters, one autograd call); the
references below adapt one task after another with ``torch.func.functional_call`` and plain autograd,
the way the papers write the algorithms. Float64, so the two agree to rounding.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalab.learners.meta.maml import MAML, learned_rate_key
from metalab.learners.meta.reptile import Reptile
from metalab.models.mlp import MLP

TASKS, WAY, SHOT, QUERY, FEATURES = 2, 3, 2, 4, 5


def _model() -> MLP:
    torch.manual_seed(0)
    return MLP(FEATURES, (7,), n_classes=WAY).double()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "support": torch.randn(TASKS, WAY * SHOT, FEATURES, generator=g, dtype=torch.float64),
        "support_labels": torch.arange(WAY).repeat(SHOT).expand(TASKS, -1),
        "query": torch.randn(TASKS, WAY * QUERY, FEATURES, generator=g, dtype=torch.float64),
        "query_labels": torch.arange(WAY).repeat(QUERY).expand(TASKS, -1),
    }


def _adapt_one_task(model, params, rates, x, y, steps, create_graph):
    """``steps`` steps of ``theta <- theta - rate * grad CE(support)`` on one task."""
    fast = dict(params)
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, fast, (x,)), y)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
        fast = {n: p - rates[n] * g for (n, p), g in zip(fast.items(), grads)}
    return fast


def test_reptile_outer_update_equals_the_serial_two_task_update():
    inner_lr, epsilon, steps = 0.3, 0.5, 3
    model, batch = _model(), _batch()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    # serial Reptile (Nichol et al. 2018, Alg. 2): theta + eps * mean_t(adapted_t - theta)
    adapted = [
        _adapt_one_task(
            model,
            {n: p.clone().requires_grad_() for n, p in start.items()},
            dict.fromkeys(start, inner_lr),
            batch["support"][t],
            batch["support_labels"][t],
            steps,
            create_graph=False,
        )
        for t in range(TASKS)
    ]
    expected = {n: start[n] + epsilon * torch.stack([a[n].detach() - start[n] for a in adapted]).mean(0) for n in start}

    learner = Reptile(
        model,
        optimizer=functools.partial(torch.optim.SGD, lr=epsilon),
        inner_steps=steps,
        inner_lr=inner_lr,
        channels_last=False,
    )
    optimizer = learner.optimizer_factory(params=model.parameters())
    learner.optimizers = lambda: optimizer  # the two Lightning services the step asks for
    learner.lr_schedulers = lambda: None
    learner.log = lambda *args, **kwargs: None
    learner.training_step(batch, 0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12, msg=n)
        assert not torch.equal(p.detach(), start[n]), n  # it moved


def test_meta_sgd_rate_gradient_equals_the_serial_version():
    inner_lr, steps = 0.2, 2
    model, batch = _model(), _batch()
    learner = MAML(
        model, optimizer=torch.optim.SGD, inner_steps=steps, inner_lr=inner_lr, learn_inner_lr=True, channels_last=False
    )
    with torch.no_grad():  # distinct rates per entry, so a rate shared per tensor would show
        for rate in learner.inner_lrs.values():
            rate.mul_(1 + 0.5 * torch.rand(rate.shape, generator=torch.Generator().manual_seed(2), dtype=rate.dtype))
    loss, _ = learner.training_loss(batch)
    loss.backward()

    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    rates = {n: learner.inner_lrs[learned_rate_key(n)].detach().clone().requires_grad_() for n in params}
    losses = []
    for t in range(TASKS):  # Li et al. 2017: theta_t = theta - alpha (*) grad; second order through both
        fast = _adapt_one_task(
            model, params, rates, batch["support"][t], batch["support_labels"][t], steps, create_graph=True
        )
        losses.append(F.cross_entropy(functional_call(model, fast, (batch["query"][t],)), batch["query_labels"][t]))
    serial = torch.stack(losses).mean()
    serial.backward()
    torch.testing.assert_close(loss.detach(), serial.detach(), rtol=1e-12, atol=1e-12)
    for n in params:
        got = learner.inner_lrs[learned_rate_key(n)].grad
        assert got is not None, n
        torch.testing.assert_close(got, rates[n].grad, rtol=1e-9, atol=1e-12, msg=f"rate of {n}")
        torch.testing.assert_close(
            dict(model.named_parameters())[n].grad, params[n].grad, rtol=1e-9, atol=1e-12, msg=f"initialisation {n}"
        )


def test_non_transductive_test_classifies_each_query_with_its_support_set_alone():
    """learner.eval_transductive=false (Nichol et al. 2018's non-transductive setting): each query's
    logits equal the adapted network run in train-mode batch norm on that task's support set plus the
    one query image, taken one (task, query) at a time here with functional_call."""
    from metalab.models.conv4 import Conv4

    torch.manual_seed(0)
    model = Conv4(hidden=4, blocks=2, out_features=3, image_size=8, stride=2, pool=False, readout="mean").double()
    batch = {
        "support": torch.randn(2, 3, 1, 8, 8, dtype=torch.float64),
        "support_labels": torch.arange(3).expand(2, -1),
        "query": torch.randn(2, 4, 1, 8, 8, dtype=torch.float64),
        "query_labels": torch.arange(3).repeat_interleave(2)[:4].expand(2, -1),
    }
    learner = MAML(
        model, optimizer=torch.optim.SGD, inner_lr=0.3, eval_inner_steps=2, channels_last=False, eval_transductive=False
    )
    learner.eval()
    ours = learner.query_logits(batch)

    model.train()  # batch statistics, as the learner's adapted network uses them
    expected = torch.empty_like(ours)
    for t in range(2):
        params = dict(model.named_parameters())
        fast = _adapt_one_task(
            model,
            params,
            dict.fromkeys(params, 0.3),
            batch["support"][t],
            batch["support_labels"][t],
            2,
            create_graph=False,
        )
        for j in range(4):
            images = torch.cat([batch["support"][t], batch["query"][t, j : j + 1]])
            expected[t, j] = functional_call(model, fast, (images,))[-1]
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10)

    learner.eval_transductive = True  # guard: the transductive logits differ, so the check above can fail
    assert (learner.query_logits(batch) - expected).abs().max() > 1e-3


def test_non_transductive_test_needs_the_whole_network_adapted():
    from metalab.errors import ConfigError
    from metalab.models.conv4 import Conv4

    model = Conv4(hidden=4, blocks=2, out_features=3, image_size=8)
    with pytest.raises(ConfigError, match="learner.eval_transductive=false is not supported with learner.adapt='head'"):
        MAML(model, optimizer=torch.optim.SGD, adapt="head", eval_transductive=False)
