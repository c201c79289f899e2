"""EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018): the hooks, and the anchor math apart.

:class:`QuadraticAnchor` is the whole of the math: one quadratic ``sum_i A_i (theta_i - m_i)^2 + c``
that absorbs each task's Fisher, its value, and the proximal step on it. :class:`EWC` only decides
when to compute a Fisher, how to absorb it (exact merge or online decay) and how SGD treats the penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from metalab import kernels
from metalab.errors import ConfigError, require
from metalab.learners.continual.fisher import diagonal_fisher
from metalab.learners.continual.methods.base import Batch, ContinualLearnerView, ContinualMethod

Tensors = dict[str, torch.Tensor]


@dataclass
class QuadraticAnchor:
    """``q(theta) = sum_i A_i (theta_i - m_i)^2 + c`` over named tensors, held in constant memory.

    Why one quadratic: a sum of per-task quadratics ``sum_t F_t (theta - theta_t)^2`` is again a
    quadratic, ``A (theta - m)^2 + c`` with ``A = sum_t F_t``, ``m = sum_t F_t theta_t / A`` and a constant
    ``c`` that makes the value exact (:meth:`merge`); online EWC instead decays the old curvature and
    re-anchors at the latest parameters (:meth:`decay_and_reanchor`), where ``c = 0``.
    """

    importance: Tensors = field(default_factory=dict)  # A, {name: [*shape]}
    anchor: Tensors = field(default_factory=dict)  # m
    constant: float = 0.0  # c

    @property
    def empty(self) -> bool:
        return not self.importance

    def decay_and_reanchor(self, fisher: Tensors, theta: Tensors, gamma: float) -> None:
        """``A <- gamma A + F``, ``m <- theta``, ``c <- 0`` (online EWC; with ``gamma = 0``, the first task)."""
        self.importance = {n: gamma * self.importance.get(n, 0.0) + f for n, f in fisher.items()}
        self.anchor, self.constant = theta, 0.0

    def merge(self, fisher: Tensors, theta: Tensors) -> None:
        """Add ``sum F (theta' - theta)^2`` exactly: new ``A``, ``m`` and ``c`` (in float64, stored back in
        the Fisher's dtype); where ``A`` is zero the anchor is the new ``theta`` (the entry has no weight)."""
        constant = self.constant
        for n, f in fisher.items():
            a_old, m_old, th = self.importance[n].double(), self.anchor[n].double(), theta[n].double()
            a_new = a_old + f.double()
            m_new = torch.where(a_new > 0, (a_old * m_old + f.double() * th) / a_new.clamp_min(1e-300), th)
            constant += float((a_old * m_old**2 + f.double() * th**2 - a_new * m_new**2).sum())
            self.importance[n], self.anchor[n] = a_new.to(f.dtype), m_new.to(f.dtype)
        self.constant = constant

    def value(self, names: list[str], params: list[torch.Tensor]) -> torch.Tensor:
        """``q`` at ``params`` (differentiable); the fused Triton kernel where Triton runs."""
        if kernels.triton_runs(params[0].device):
            # value and gradient of sum A (theta - m)^2 in one pass per tensor
            quad = sum(
                kernels.ewc_penalty(self.importance[n].contiguous(), p.contiguous(), self.anchor[n].contiguous())
                for n, p in zip(names, params)
            )
        else:
            diffs = torch._foreach_sub(params, [self.anchor[n] for n in names])
            weighted = torch._foreach_mul(diffs, [self.importance[n] for n in names])
            quad = torch.stack([(w * d).sum() for w, d in zip(weighted, diffs)]).sum()
        return quad + self.constant

    @torch.no_grad()
    def proximal_step_(self, names: list[str], params: list[torch.Tensor], rate: float) -> None:
        """Move each entry in place to ``argmin_theta |theta - theta'|^2 / 2 + rate/2 A (theta - m)^2``,
        i.e. ``theta = m + (theta' - m) / (1 + rate A)``."""
        for n, p in zip(names, params):
            anchor = self.anchor[n]
            p.copy_(anchor + (p - anchor) / (1.0 + rate * self.importance[n]))

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor, "constant": self.constant}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance, self.anchor, self.constant = state["importance"], state["anchor"], state["constant"]


class EWC(ContinualMethod):
    """Elastic weight consolidation and online EWC: penalty ``lambda/2 * q(theta)`` (:class:`QuadraticAnchor`).

    - EWC: ``q = sum_t F_t (theta - theta_t)^2`` over past tasks, merged exactly;
    - online EWC: ``A = gamma A + F_t``, anchored at the latest parameters.

    ``F_t`` is the exact diagonal Fisher on task t's training data (``fisher_examples`` of them; ``null``:
    all), empirical (true labels) or with labels sampled from the model (``sampled_labels``).

    ``update``: how SGD treats the penalty. ``"gradient"`` adds it to the loss (the usual way). Its
    curvature ``lambda * A`` is very uneven across entries (a few Fisher entries dwarf the rest), and
    plain SGD diverges once ``lr * lambda * A > 2`` for any entry, so lambda must stay small enough for
    the stiffest entry and then barely holds the rest. ``"proximal"`` minimises the same objective with
    a proximal step instead: after the optimiser's step on the task loss, each entry moves to the exact
    minimiser of ``|theta - theta'|^2 / (2 lr) + lambda/2 A (theta - m)^2``: stable for any lambda (stiff
    entries are pinned, soft ones follow the task). It needs plain SGD (no momentum or weight decay),
    whose step is that ``lr``.
    """

    name = "ewc"

    def __init__(
        self,
        ewc_lambda: float = 100.0,
        online: bool = False,
        gamma: float = 1.0,
        sampled_labels: bool = False,
        fisher_examples: int | None = None,
        fisher_batch_size: int = 128,
        seed: int = 0,
        update: str = "gradient",
    ) -> None:
        require(
            math.isfinite(ewc_lambda) and ewc_lambda >= 0,
            "learner.method.ewc_lambda",
            "a finite number >= 0",
            ewc_lambda,
        )
        require(0.0 <= gamma <= 1.0, "learner.method.gamma", "in [0, 1]", gamma)
        require(
            fisher_examples is None or fisher_examples >= 1,
            "learner.method.fisher_examples",
            "null (all) or at least 1",
            fisher_examples,
        )
        require(fisher_batch_size >= 1, "learner.method.fisher_batch_size", "at least 1", fisher_batch_size)
        require(update in ("gradient", "proximal"), "learner.method.update", "'gradient' or 'proximal'", update)
        self.name = "online_ewc" if online else "ewc"
        self.proximal = update == "proximal"
        self.ewc_lambda, self.online, self.gamma = ewc_lambda, online, gamma
        self.sampled_labels, self.fisher_examples, self.fisher_batch_size = (
            sampled_labels,
            fisher_examples,
            fisher_batch_size,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.quadratic = QuadraticAnchor()

    def penalty(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        if self.quadratic.empty or self.proximal:  # proximal: applied in after_optimizer_step
            return None
        names = list(self.quadratic.importance)
        return 0.5 * self.ewc_lambda * self.quadratic.value(names, learner.trainable_parameters(names))

    def after_optimizer_step(self, learner: ContinualLearnerView) -> None:
        if self.quadratic.empty or not self.proximal:
            return
        lr = plain_sgd_step_size(learner.optimizers())
        names = list(self.quadratic.importance)
        self.quadratic.proximal_step_(names, learner.trainable_parameters(names), lr * self.ewc_lambda)

    def after_task(self, learner: ContinualLearnerView, task: int) -> None:
        fisher = self.task_fisher(learner, task)
        theta = {n: p.detach().clone() for n, p in learner.net.named_parameters() if n in fisher}
        if self.online or self.quadratic.empty:
            self.quadratic.decay_and_reanchor(fisher, theta, self.gamma if not self.quadratic.empty else 0.0)
        else:
            self.quadratic.merge(fisher, theta)

    def task_fisher(self, learner: ContinualLearnerView, task: int) -> dict[str, torch.Tensor]:
        """The exact diagonal Fisher of the network on ``task``'s training data (or a seeded subset)."""
        x, y = learner.task_training_data(task)
        if self.fisher_examples is not None and self.fisher_examples < len(y):
            keep = torch.randperm(len(y), generator=self.generator)[: self.fisher_examples]
            x, y = x[keep], y[keep]
        chunks = [
            (learner.prepare(x[i : i + self.fisher_batch_size]), y[i : i + self.fisher_batch_size])
            for i in range(0, len(y), self.fisher_batch_size)
        ]
        with torch.autocast("cpu", enabled=False):
            return diagonal_fisher(learner.net, chunks, sampled=self.sampled_labels, generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {**self.quadratic.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, learner: ContinualLearnerView, state: dict[str, Any]) -> None:
        self.quadratic.load_state_dict(state)
        self.generator.set_state(state["generator"])


def plain_sgd_step_size(optimizer: Any) -> float:
    """The step size of a plain SGD optimiser (the proximal EWC step is exact only for it)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper
    groups = optimizer.param_groups
    plain = isinstance(optimizer, torch.optim.SGD) and all(
        g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0 for g in groups
    )
    if not plain or len({g["lr"] for g in groups}) != 1:
        raise ConfigError(
            "learner.method.update='proximal' needs plain SGD with one learning rate (no momentum, "
            f"no weight decay); got {type(optimizer).__name__}. Use update='gradient' otherwise"
        )
    return float(groups[0]["lr"])
