"""DER++'s replay loss and LwF's distillation, written out by hand, against one real training step.

Each test runs :func:`continual_step` (the step the learner runs) on a :class:`PlainLearner` and checks
that the parameters moved exactly as one SGD step on the loss the paper defines, computed here from
first principles (explicit softmax, squares and sums, no ``torch.nn.functional`` losses).
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.learners.continual.loop import PlainLearner, continual_step
from metalab.learners.continual.methods import DERPlusPlus, LwF, StreamInfo

LR = 0.1
CLASSES_PER_TASK, N_TASKS, FEATURES = 2, 3, 4


def _learner(seed: int = 0) -> PlainLearner:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(FEATURES, 5), nn.Tanh(), nn.Linear(5, CLASSES_PER_TASK * N_TASKS)).double()
    info = StreamInfo(N_TASKS, CLASSES_PER_TASK, train_examples=100, example_x=torch.zeros(1, FEATURES))
    return PlainLearner(net, torch.optim.SGD(net.parameters(), lr=LR), [], info)


def _batch(n: int, seed: int, task: int = 0) -> dict[str, torch.Tensor]:
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


def _assert_one_sgd_step_on(learner: PlainLearner, before: dict[str, torch.Tensor], loss_by_hand) -> None:
    """The parameters equal ``before - LR * grad(loss_by_hand)`` evaluated at ``before`` (to 1e-7: the
    methods compute distillation targets and store replay logits in float32, by design for bf16 runs)."""
    net = learner.net
    params = {n: p.clone().requires_grad_() for n, p in before.items()}
    loss = loss_by_hand(lambda x: torch.func.functional_call(net, params, (x,)))
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(
            dict(net.named_parameters())[name].detach(), p.detach() - LR * g, rtol=0, atol=1e-7, msg=name
        )


def test_derpp_step_is_sgd_on_label_ce_plus_logit_mse_and_label_ce_on_two_buffer_samples():
    learner = _learner()
    alpha, beta, replay_size = 0.3, 0.7, 3
    method = DERPlusPlus(buffer_size=8, replay_batch_size=replay_size, alpha=alpha, beta=beta, seed=0)
    # A fixed buffer: 8 examples with known labels and known stored logits (fills in order while not full).
    stored = _batch(8, seed=1)
    stored_logits = torch.randn(
        8, CLASSES_PER_TASK * N_TASKS, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    method.after_step(learner, stored, stored_logits)
    drawn = []
    real_replay_batch = method.replay_batch
    method.replay_batch = lambda learner, n: drawn.append(real_replay_batch(learner, n)) or drawn[-1]

    batch = _batch(5, seed=3)
    before = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    continual_step(learner, method, batch, task=0, optimizer=learner.optimizer)

    # Which buffer rows were replayed: found by their inputs, then scored with *our* table.
    rows = [int((stored["x"] == x).all(1).nonzero()) for x in drawn[0].x]
    for_logits, for_labels = rows[:replay_size], rows[replay_size:]
    assert len(for_labels) == replay_size

    def loss_by_hand(net):
        current = _cross_entropy(net(batch["x"]), batch["y"])
        logit_rows = net(stored["x"][for_logits])
        mse = ((logit_rows - stored_logits[for_logits]) ** 2).sum() / logit_rows.numel()
        labels = _cross_entropy(net(stored["x"][for_labels]), stored["y"][for_labels])
        return current + alpha * mse + beta * labels

    _assert_one_sgd_step_on(learner, before, loss_by_hand)


def test_lwf_step_is_sgd_on_ce_plus_temperature_scaled_kl_to_the_previous_model_on_old_classes():
    learner = _learner()
    alpha, temperature = 0.6, 2.5
    method = LwF(alpha=alpha, temperature=temperature)
    teacher_params = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    method.before_task(learner, 1)  # the network as it is now becomes the teacher of task 1
    with torch.no_grad():  # training on task 1 has moved the network since
        for p in learner.net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = _batch(6, seed=4, task=1)
    before = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    continual_step(learner, method, batch, task=1, optimizer=learner.optimizer)

    old = 1 * CLASSES_PER_TASK  # classes of task 0
    teacher_logits = torch.func.functional_call(learner.net, teacher_params, (batch["x"],))

    def loss_by_hand(net):
        logits = net(batch["x"])
        log_p = _log_softmax(teacher_logits[:, :old] / temperature)  # Li & Hoiem 2017, Eq. 2, as KL
        log_q = _log_softmax(logits[:, :old] / temperature)
        kl = (log_p.exp() * (log_p - log_q)).sum(1).mean()
        return _cross_entropy(logits, batch["y"]) + alpha * temperature**2 * kl

    _assert_one_sgd_step_on(learner, before, loss_by_hand)
