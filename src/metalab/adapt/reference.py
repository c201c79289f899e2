"""The MAML step, task after task, in plain PyTorch: the specification of the batched engine.

This is the math that :class:`metalab.adapt.InnerLoop` with :class:`metalab.adapt.TaskBatchedModel`
computes for a whole meta-batch at once (Finn et al. 2017, Algorithm 2). Read it first. It is also
the tests' oracle (float64 meta-gradients of the fast paths must equal its own to 1e-10) and the
fallback for models the fast paths do not cover (``learner.engine=serial``): slow, but any
``nn.Module`` that ``torch.func.functional_call`` can run.

For each task: start from the shared initialisation, take ``steps`` gradient steps on the support
loss, ``theta <- theta - lr * grad``; the task's logits are the adapted network on its query set.
``first_order=True`` treats each inner gradient as a constant (first-order MAML, Reptile's
adaptation); otherwise the meta-gradient flows through the inner gradients (``create_graph``).
Batch norm uses each call's own batch statistics, in training and in eval mode alike (as the grouped
engine and MAML's reference code do): the task's support set in the inner loop, its query set at the
end; running averages are neither used nor updated (:func:`batch_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Inside: every batch-norm layer of ``module`` normalises with the statistics of the batch it is
    given and leaves its running averages alone, whether the module is in training or eval mode.
    Why: a task's adaptation must not depend on the module's mode (Lightning puts it in eval mode for
    validation and test, where running averages the meta-learner never trained would be used)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, (training, tracked) in zip(norms, saved):
            m.training, m.track_running_stats = training, tracked


def adapt_one_task(
    module: nn.Module,
    init: Params,
    support: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    lr: float | Params,
    first_order: bool,
    names: list[str] | None = None,
) -> Params:
    """Parameters after ``steps`` SGD steps on one task's support set (``"n ..."``, labels ``"n"``).

    ``lr``: one rate, or one tensor per adapted name (Meta-SGD). ``names``: the parameters to adapt
    (all by default; the head only for ANIL); the others stay at ``init``.
    """
    names = list(init) if names is None else names
    params = dict(init)
    with batch_statistics(module):
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(module, params, (support,)), labels)
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order)
            for name, grad in zip(names, grads):
                rate = lr[name] if isinstance(lr, dict) else lr
                params[name] = params[name] - rate * (grad.detach() if first_order else grad)
    return params


def query_logits(
    module: nn.Module,
    init: Params,
    batch: dict[str, torch.Tensor],
    steps: int,
    lr: float | Params,
    first_order: bool,
    names: list[str] | None = None,
) -> torch.Tensor:
    """``"t n way"``: each task's query logits after adapting to its support set, one task at a time."""
    logits = []
    with batch_statistics(module):
        for t in range(batch["support"].shape[0]):
            fast = adapt_one_task(
                module, init, batch["support"][t], batch["support_labels"][t], steps, lr, first_order, names
            )
            logits.append(functional_call(module, fast, (batch["query"][t],)))
    return torch.stack(logits)


def meta_loss(
    module: nn.Module,
    batch: dict[str, torch.Tensor],
    steps: int,
    lr: float | Params,
    first_order: bool,
    names: list[str] | None = None,
) -> torch.Tensor:
    """MAML's outer loss: the mean over tasks of the adapted query loss; its gradient is the meta-gradient."""
    logits = query_logits(module, dict(module.named_parameters()), batch, steps, lr, first_order, names)
    return F.cross_entropy(logits.flatten(0, 1), batch["query_labels"].flatten())
