"""Replay distillation (metalab.learners.continual.methods.distill) against one real training step: the
parameters move exactly as one SGD step on CE(current batch) + beta * CE(replayed labels) + alpha * T^2 *
KL(previous model / T || current / T) on the replayed images over the old classes, written out by hand."""

from __future__ import annotations

import torch
from torch import nn

from metalab.learners.continual.loop import PlainLearner, continual_step
from metalab.learners.continual.methods import StreamInfo
from metalab.learners.continual.methods.distill import ReplayDistillation

LR, CLASSES_PER_TASK, N_TASKS, FEATURES = 0.1, 2, 3, 4


def _learner() -> PlainLearner:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(FEATURES, 5), nn.Tanh(), nn.Linear(5, CLASSES_PER_TASK * N_TASKS)).double()
    info = StreamInfo(N_TASKS, CLASSES_PER_TASK, train_examples=100, example_x=torch.zeros(1, FEATURES))
    return PlainLearner(net, torch.optim.SGD(net.parameters(), lr=LR), [], info)


def _batch(n: int, seed: int, task: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(n, FEATURES, generator=g, dtype=torch.float64),
        "y": task * CLASSES_PER_TASK + torch.randint(0, CLASSES_PER_TASK, (n,), generator=g),
        "task": torch.full((n,), task),
    }


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def _cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -_log_softmax(z)[torch.arange(len(y)), y].mean()


def test_step_is_sgd_on_ce_plus_replayed_labels_plus_tempered_kl_to_the_previous_model():
    learner = _learner()
    alpha, beta, temperature = 0.8, 0.3, 3.0
    method = ReplayDistillation(buffer_size=6, replay_batch_size=3, alpha=alpha, beta=beta, temperature=temperature)
    stored = _batch(6, seed=1, task=0)
    method.after_step(learner, stored, torch.zeros(6, CLASSES_PER_TASK * N_TASKS))  # fills the buffer in order
    previous = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    method.before_task(learner, 1)  # the network as it is now is the previous model of task 1
    with torch.no_grad():  # task 1's training has moved the network since
        for p in learner.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    drawn = []
    real = method.replay_batch
    method.replay_batch = lambda learner, n: drawn.append(real(learner, n)) or drawn[-1]
    batch = _batch(5, seed=3, task=1)
    before = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    continual_step(learner, method, batch, task=1, optimizer=learner.optimizer)

    replayed_x, replayed_y = drawn[0].x, drawn[0].labels
    old = CLASSES_PER_TASK  # the classes of task 0
    previous_logits = torch.func.functional_call(learner.net, previous, (replayed_x,))

    def loss_by_hand(net):
        current = _cross_entropy(net(batch["x"]), batch["y"])
        logits = net(replayed_x)
        log_p = _log_softmax(previous_logits[:, :old] / temperature)
        log_q = _log_softmax(logits[:, :old] / temperature)
        kl = (log_p.exp() * (log_p - log_q)).sum(1).mean()
        return current + beta * _cross_entropy(logits, replayed_y) + alpha * temperature**2 * kl

    params = {n: p.clone().requires_grad_() for n, p in before.items()}
    loss = loss_by_hand(lambda x: torch.func.functional_call(learner.net, params, (x,)))
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(
            dict(learner.net.named_parameters())[name].detach(), p.detach() - LR * g, rtol=0, atol=1e-7, msg=name
        )


def test_first_task_is_experience_replay_and_state_survives_a_resume():
    learner = _learner()
    method = ReplayDistillation(buffer_size=4, replay_batch_size=2)
    method.after_step(learner, _batch(4, seed=1, task=0), torch.zeros(4, CLASSES_PER_TASK * N_TASKS))
    assert method.previous is None  # no previous model in the first task: labels only
    method.before_task(learner, 1)
    restored = ReplayDistillation(buffer_size=4, replay_batch_size=2)
    restored.load_state_dict(learner, method.state_dict())
    assert restored.old_classes == CLASSES_PER_TASK
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    torch.testing.assert_close(restored.previous(x), method.previous(x))
