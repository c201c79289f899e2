"""Reptile's inner loop as its paper runs it: Adam (beta1 = 0) on mini-batches, all tasks at once.

The oracle is ``torch.optim.Adam`` stepping a plain copy of the network one task at a time (through
``torch.func.functional_call`` and the serial reference's batch statistics), from the same carried-over
state and on the same mini-batches; the batched engine must land on the same weights and moments.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalab.adapt import AdamState, InnerLoop, TaskBatchedModel, merge_sequential, minibatch_indices
from metalab.adapt.reference import batch_statistics
from metalab.errors import ConfigError
from metalab.learners.meta.reptile import Reptile
from metalab.models.conv4 import Conv4

TASKS, WAY, SHOT, STEPS, BATCH, LR, BETAS = 3, 5, 2, 5, 4, 0.01, (0.0, 0.999)


def _model() -> Conv4:
    torch.manual_seed(0)
    return Conv4(hidden=6, blocks=3, out_features=WAY, image_size=12, stride=2, pool=False, readout="mean").double()


def _episodes() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(TASKS, WAY * SHOT, 1, 12, 12, generator=g, dtype=torch.float64)
    return x, torch.arange(WAY).repeat(SHOT).expand(TASKS, -1).contiguous()


def _start(params: dict[str, torch.Tensor]) -> AdamState:
    """A carried-over state: moments from earlier tasks and a step count past the bias correction's start."""
    g = torch.Generator().manual_seed(2)
    return AdamState(
        7,
        {n: 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()},
        {n: 0.01 * torch.rand(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()},
    )


def _torch_adam_one_task(model, init, start, x, y, picks):
    """One task: ``torch.optim.Adam`` on leaf copies of the weights, its state loaded from ``start``."""
    params = {n: p.detach().clone().requires_grad_() for n, p in init.items()}
    opt = torch.optim.Adam(params.values(), lr=LR, betas=BETAS, eps=1e-8)
    for n, p in params.items():
        opt.state[p] = {
            "step": torch.tensor(float(start.step)),
            "exp_avg": start.exp_avg[n].clone(),
            "exp_avg_sq": start.exp_avg_sq[n].clone(),
        }
    with batch_statistics(model):
        for idx in picks:
            opt.zero_grad()
            F.cross_entropy(functional_call(model, params, (x[idx],)), y[idx]).backward()
            opt.step()
    return params, {n: opt.state[p]["exp_avg_sq"] for n, p in params.items()}


def test_batched_adam_on_minibatches_equals_torch_adam_task_by_task():
    model, (x, y) = _model(), _episodes()
    init = dict(model.named_parameters())
    start = _start(init)
    loop = InnerLoop(steps=STEPS, lr=LR, first_order=True, optimizer="adam", batch=BATCH, betas=BETAS)
    fast, final = loop.run(
        TaskBatchedModel(model, channels_last=False),
        init,
        x,
        y,
        state=start,
        generator=torch.Generator().manual_seed(3),
    )
    picks = minibatch_indices(TASKS, WAY * SHOT, BATCH, STEPS, torch.Generator().manual_seed(3))
    assert final.step == start.step + STEPS
    for t in range(TASKS):
        expected, moments = _torch_adam_one_task(model, init, start, x[t], y[t], picks[:, t])
        for n in init:
            if not n.endswith(".0.bias"):  # a conv bias before batch norm has no gradient
                assert not torch.equal(expected[n], init[n])
            torch.testing.assert_close(fast[n][t], expected[n].detach(), rtol=0, atol=1e-6)
            torch.testing.assert_close(final.exp_avg_sq[n][t], moments[n], rtol=0, atol=1e-6)


def test_minibatches_run_through_fresh_permutations():
    """Batches of 4 from 10 examples: every aligned 10 draws of a task are a permutation of its examples,
    and batches straddle permutations (the paper's code keeps filling a batch after reshuffling)."""
    picks = minibatch_indices(2, 10, 4, 5, torch.Generator().manual_seed(0))
    assert picks.shape == (5, 2, 4)
    for t in range(2):
        stream = picks[:, t].flatten()
        for epoch in stream.split(10):
            assert sorted(epoch.tolist()) == list(range(10))


def test_carried_state_is_the_one_tasks_run_in_turn_leave():
    """Averages of task after task, each of 5 steps, against the batched tasks' finals merged."""
    g = torch.Generator().manual_seed(4)
    start, squares, beta, steps = torch.rand(3, generator=g), torch.rand(4, 5, 3, generator=g), 0.999, 5
    finals, sequential = [], start.clone()
    for t in range(4):
        own = start.clone()
        for k in range(steps):
            own = beta * own + (1 - beta) * squares[t, k]
            sequential = beta * sequential + (1 - beta) * squares[t, k]
        finals.append(own)
    torch.testing.assert_close(merge_sequential(start, torch.stack(finals), steps, beta), sequential)


def test_reptile_carries_adam_state_across_meta_steps():
    model, (x, y) = _model(), _episodes()
    learner = Reptile(
        model,
        optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        inner_steps=STEPS,
        inner_lr=LR,
        inner_optimizer="adam",
        inner_batch=BATCH,
        channels_last=False,
    )
    learner.train()
    before = {n: p.clone() for n, p in learner.inner_adam.state().exp_avg_sq.items()}
    learner.adapt_support(x, y, STEPS, first_order=True)
    assert int(learner.inner_adam.step) == TASKS * STEPS
    assert all(not torch.equal(before[n], v) for n, v in learner.inner_adam.state().exp_avg_sq.items())
    learner.eval()  # evaluation starts from the training state and leaves it alone, as the paper's code
    saved = {n: p.clone() for n, p in learner.inner_adam.state().exp_avg_sq.items()}
    learner.adapt_support(x, y, STEPS, first_order=True)
    assert int(learner.inner_adam.step) == TASKS * STEPS
    assert all(torch.equal(saved[n], v) for n, v in learner.inner_adam.state().exp_avg_sq.items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"optimizer": "rmsprop"},
            r"learner.inner_optimizer='rmsprop' is not allowed: must be one of \('sgd', 'adam'\)",
        ),
        ({"optimizer": "adam", "first_order": False}, r"needs a first-order learner"),
        ({"batch": -1}, r"learner.inner_batch=-1 is not allowed"),
    ],
)
def test_bad_inner_optimizer_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        InnerLoop(**{"steps": 1, "lr": 0.1, "first_order": True, **kwargs})
