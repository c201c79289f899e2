"""First-order DARTS (Liu, Simonyan and Yang, ICLR 2019) and its guard against skip-connection collapse.

One search step alternates two gradient steps on the supernet (:class:`~metalab.nas.network.SuperNetwork`):

1. *architecture step*: the gradient of the loss on a search-**validation** batch with respect to the
   architecture logits alpha, the network weights w held where they are. This is DARTS's first-order
   approximation: the second-order term (how w would move after a virtual step) is dropped.
2. *weight step*: the gradient of the loss on a search-**train** batch with respect to w.

Known failure: DARTS drifts towards parameter-free operations, skip connections above all, because
they make the supernet easy to train early on even though the derived cell is then weak (Zela et al.
2020; on NAS-Bench-201 first-order DARTS ends with every edge a skip, Dong and Yang 2020).

Guard used here: DARTS- (Chu, Wang, Zhang, Zhang, Wei and Yan, "DARTS-: Robustly Stepping out of
Performance Collapse Without Indicators", ICLR 2021). Every edge gets an auxiliary skip connection
``beta * x`` *outside* the mixed operation, with ``beta`` decaying linearly from 1 to 0 over the search.
The auxiliary path carries the gradient-flow advantage a skip gives, so the skip connection inside the
mixed operation no longer wins merely for easing optimisation; with ``beta`` at 0 at the end the supernet
is the plain one again. Config switch: ``learner.guard=dartsminus`` (on) or ``learner.guard=none`` (off,
``conf/experiment/nas/darts_noguard.yaml``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.errors import require
from metalab.nas.network import SuperNetwork

GUARDS = ("dartsminus", "none")


def auxiliary_skip_beta(guard: str, step: int, total_steps: int, beta_start: float = 1.0) -> float:
    """DARTS-'s ``beta`` at ``step`` of ``total_steps``: ``beta_start * (1 - step / total_steps)``; 0 without the
    guard."""
    require(guard in GUARDS, "learner.guard", f"one of {', '.join(GUARDS)}", guard)
    if guard == "none":
        return 0.0
    return beta_start * max(0.0, 1.0 - step / max(1, total_steps))


def classification_loss(
    supernet: SuperNetwork, x: torch.Tensor, y: torch.Tensor, skip_beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy (fraction) of the supernet on one batch."""
    logits = supernet(x, skip_beta=skip_beta)
    return F.cross_entropy(logits, y), (logits.argmax(dim=-1) == y).float().mean()


def architecture_gradient(
    supernet: SuperNetwork, x_val: torch.Tensor, y_val: torch.Tensor, skip_beta: float = 0.0
) -> torch.Tensor:
    """First-order DARTS's architecture gradient ``dL_val(w, alpha) / d alpha`` at the current w (no
    weight gradient is accumulated). The learner's step takes the same loss through ``manual_backward``;
    this plain form is the reference the tests and benchmarks call."""
    loss, _ = classification_loss(supernet, x_val, y_val, skip_beta)
    (gradient,) = torch.autograd.grad(loss, [supernet.arch_logits])
    return gradient
