"""Continual-learning methods as small objects plugged into the one loop of :class:`ContinualLearner`.

A method never trains: the learner runs every step (one forward over the current batch plus whatever
:meth:`ContinualMethod.replay_batch` adds, cross-entropy on the current batch, then
:meth:`~ContinualMethod.replay_loss` and :meth:`~ContinualMethod.penalty`) and calls the hooks at task
and step boundaries. Each method only says what differs:

==================  =====================================================================================
finetune            nothing (the floor: plain SGD task after task)
joint               trains on every task seen so far (the ceiling)
ewc / online ewc    quadratic penalty weighted by the exact diagonal Fisher (``fisher.py``)
er                  reservoir buffer, replayed samples concatenated to the batch (Chaudhry et al. 2019)
derpp               buffer of samples and their logits: logit MSE + label CE on replay (Buzzega et al. 2020)
lwf                 distillation of the previous model's old-class outputs on current data (Li & Hoiem 2017)
progressive         a new column per task with lateral adapters (``progressive.py``)
==================  =====================================================================================
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metalab import kernels
import torch
import torch.nn.functional as F
from torch import nn

from metalab.errors import ConfigError, require
from metalab.learners.continual.buffer import ReservoirBuffer, TaskBalancedBuffer
from metalab.learners.continual.fisher import diagonal_fisher

if TYPE_CHECKING:
    from metalab.learners.continual.learner import ContinualLearner

Batch = dict[str, torch.Tensor]


@dataclass
class StreamInfo:
    """What a method may know about the stream before training starts."""

    n_tasks: int
    classes_per_task: int
    train_examples: int          # over all tasks (what a buffer could ever hold)
    example_x: torch.Tensor      # one input ``[1, c, h, w]``, for shape inference

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self.classes_per_task


class ContinualMethod:
    """Fine-tuning, and the hooks every method may override (all are no-ops here)."""

    name = "finetune"
    trains_on_all_seen_tasks = False       # joint training: the loader of task t serves tasks 0..t
    masks_training_logits_to_task = False  # loss only over the current task's classes (task-specific heads)

    def build_network(self, backbone: nn.Module, stream: StreamInfo) -> nn.Module:
        """The network the learner trains; most methods train the backbone itself."""
        return backbone

    def setup(self, stream: StreamInfo) -> None:
        """Check the method's settings against the stream (raise :class:`ConfigError`)."""

    def before_task(self, task: int, learner: "ContinualLearner") -> None:
        """Called at the first epoch of ``task``."""

    def replay_batch(self, n: int) -> Batch | None:
        """Examples to append to the current batch of ``n`` (same forward pass), or ``None``."""
        return None

    def replay_loss(self, logits: torch.Tensor, replay: Batch) -> torch.Tensor:
        """Loss on the replayed part of the forward pass (``logits [m, classes]``)."""
        raise NotImplementedError

    def penalty(self, learner: "ContinualLearner", batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        """A regulariser added to the loss (``None``: none)."""
        return None

    def after_step(self, batch: Batch, logits: torch.Tensor) -> None:
        """Called in every training step, once the loss is built, with the current batch and its
        (detached) logits."""

    def after_optimizer_step(self, learner: "ContinualLearner") -> None:
        """Called after every optimiser step (parameters already updated)."""

    def after_task(self, task: int, learner: "ContinualLearner") -> None:
        """Called after the last epoch of ``task``, before the evaluation of all tasks."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], learner: "ContinualLearner") -> None:
        pass


class Finetune(ContinualMethod):
    """Plain sequential training: the lower bound every method must beat."""


class Joint(ContinualMethod):
    """Training on all data seen so far at each task: the upper bound (not a continual method)."""

    name = "joint"
    trains_on_all_seen_tasks = True


class EWC(ContinualMethod):
    """Elastic weight consolidation (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018).

    Penalty ``lambda/2 * sum_i A_i (theta_i - m_i)^2 + lambda/2 * c``:

    - EWC: ``sum_t F_t (theta - theta_t)^2`` over past tasks, held exactly in constant memory as
      ``A = sum_t F_t``, ``m = sum_t F_t theta_t / A`` and the constant ``c`` (so the value is exact too);
    - online EWC: ``A = gamma A + F_t``, ``m = theta_t`` (the latest parameters), ``c = 0``.

    ``F_t`` is the exact diagonal Fisher on task t's training data (``fisher_examples`` of them; ``null``:
    all), empirical (true labels) or with labels sampled from the model (``sampled_labels``).

    ``update``: how SGD treats the penalty. ``"gradient"`` adds it to the loss (the usual way). Its
    curvature ``lambda * A`` is very uneven across entries (a few Fisher entries dwarf the rest), and
    plain SGD diverges once ``lr * lambda * A > 2`` for any entry, so lambda must stay small enough for
    the stiffest entry and then barely holds the rest. ``"proximal"`` minimises the same
    objective with a proximal step instead: after the optimiser's step on the task loss, each entry moves
    to the exact minimiser of ``|theta - theta'|^2 / (2 lr) + lambda/2 A (theta - m)^2``, i.e.
    ``theta = m + (theta' - m) / (1 + lr lambda A)``: stable for any lambda (stiff entries are pinned,
    soft ones follow the task). It needs plain SGD (no momentum or weight decay), whose step is that
    ``lr``.
    """

    name = "ewc"

    def __init__(self, ewc_lambda: float = 100.0, online: bool = False, gamma: float = 1.0,
                 sampled_labels: bool = False, fisher_examples: int | None = None, fisher_batch_size: int = 128,
                 seed: int = 0, update: str = "gradient") -> None:
        require(math.isfinite(ewc_lambda) and ewc_lambda >= 0, "learner.method.ewc_lambda", "a finite number >= 0",
                ewc_lambda)
        require(0.0 <= gamma <= 1.0, "learner.method.gamma", "in [0, 1]", gamma)
        require(fisher_examples is None or fisher_examples >= 1, "learner.method.fisher_examples",
                "null (all) or at least 1", fisher_examples)
        require(fisher_batch_size >= 1, "learner.method.fisher_batch_size", "at least 1", fisher_batch_size)
        require(update in ("gradient", "proximal"), "learner.method.update", "'gradient' or 'proximal'", update)
        self.name = "online_ewc" if online else "ewc"
        self.proximal = update == "proximal"
        self.ewc_lambda, self.online, self.gamma = ewc_lambda, online, gamma
        self.sampled_labels, self.fisher_examples, self.fisher_batch_size = sampled_labels, fisher_examples, fisher_batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.constant = 0.0

    def penalty(self, learner: "ContinualLearner", batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        if not self.importance or self.proximal:  # proximal: applied in after_optimizer_step
            return None
        names = list(self.importance)
        params = learner.trainable_parameters(names)
        if kernels.triton_runs(params[0].device):
            # Fused Triton kernel: value and gradient of sum F (theta - theta*)^2 in one pass per tensor.
            quad = sum(kernels.ewc_penalty(self.importance[n].contiguous(), p.contiguous(), self.anchor[n].contiguous())
                       for n, p in zip(names, params))
        else:
            diffs = torch._foreach_sub(params, [self.anchor[n] for n in names])
            weighted = torch._foreach_mul(diffs, [self.importance[n] for n in names])
            quad = torch.stack([(w * d).sum() for w, d in zip(weighted, diffs)]).sum()
        return 0.5 * self.ewc_lambda * (quad + self.constant)

    @torch.no_grad()
    def after_optimizer_step(self, learner: "ContinualLearner") -> None:
        if not self.importance or not self.proximal:
            return
        lr = _plain_sgd_step_size(learner.optimizers())
        names = list(self.importance)
        for n, p in zip(names, learner.trainable_parameters(names)):
            anchor = self.anchor[n]
            p.copy_(anchor + (p - anchor) / (1.0 + lr * self.ewc_lambda * self.importance[n]))

    def after_task(self, task: int, learner: "ContinualLearner") -> None:
        x, y = learner.task_training_data(task)
        if self.fisher_examples is not None and self.fisher_examples < len(y):
            keep = torch.randperm(len(y), generator=self.generator)[: self.fisher_examples]
            x, y = x[keep], y[keep]
        chunks = [(learner.prepare(x[i:i + self.fisher_batch_size]), y[i:i + self.fisher_batch_size])
                  for i in range(0, len(y), self.fisher_batch_size)]
        with torch.autocast("cpu", enabled=False):
            fisher = diagonal_fisher(learner.net, chunks, sampled=self.sampled_labels, generator=self.generator)
        theta = {n: p.detach().clone() for n, p in learner.net.named_parameters() if n in fisher}
        if self.online or not self.importance:
            decay = self.gamma if self.importance else 0.0
            self.importance = {n: decay * self.importance.get(n, 0.0) + f for n, f in fisher.items()}
            self.anchor, self.constant = theta, 0.0
            return
        constant = self.constant
        for n, f in fisher.items():
            a_old, m_old, th = self.importance[n].double(), self.anchor[n].double(), theta[n].double()
            a_new = a_old + f.double()
            m_new = torch.where(a_new > 0, (a_old * m_old + f.double() * th) / a_new.clamp_min(1e-300), th)
            constant += float((a_old * m_old ** 2 + f.double() * th ** 2 - a_new * m_new ** 2).sum())
            self.importance[n], self.anchor[n] = a_new.to(f.dtype), m_new.to(f.dtype)
        self.constant = constant

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor, "constant": self.constant,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], learner: "ContinualLearner") -> None:
        self.importance, self.anchor, self.constant = state["importance"], state["anchor"], state["constant"]
        self.generator.set_state(state["generator"])


def _plain_sgd_step_size(optimizer: Any) -> float:
    """The step size of a plain SGD optimiser (the proximal EWC step is exact only for it)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper
    groups = optimizer.param_groups
    plain = isinstance(optimizer, torch.optim.SGD) and all(
        g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0 for g in groups)
    if not plain or len({g["lr"] for g in groups}) != 1:
        raise ConfigError("learner.method.update='proximal' needs plain SGD with one learning rate (no momentum, "
                          f"no weight decay); got {type(optimizer).__name__}. Use update='gradient' otherwise")
    return float(groups[0]["lr"])


class ExperienceReplay(ContinualMethod):
    """Experience replay: each step also trains on ``replay_batch_size`` stored samples.

    ``fill``: ``"reservoir"`` (Chaudhry et al. 2019, as in DER/Mammoth) offers every training batch to a
    reservoir, so the buffer also holds the current task; ``"task_end"`` stores a task-balanced random
    subset of each task when it ends (as Avalanche's ``Replay``), so only earlier tasks are replayed.
    """

    name = "er"

    def __init__(self, buffer_size: int = 500, replay_batch_size: int = 32, seed: int = 0,
                 fill: str = "reservoir") -> None:
        require(buffer_size >= 1, "learner.method.buffer_size", "at least 1", buffer_size)
        require(replay_batch_size >= 1, "learner.method.replay_batch_size", "at least 1", replay_batch_size)
        require(fill in ("reservoir", "task_end"), "learner.method.fill", "'reservoir' or 'task_end'", fill)
        self.fill_at_task_end = fill == "task_end"
        self.buffer = TaskBalancedBuffer(buffer_size, seed) if self.fill_at_task_end else ReservoirBuffer(buffer_size, seed)
        self.replay_batch_size = replay_batch_size

    def setup(self, stream: StreamInfo) -> None:
        require(self.buffer.size <= stream.train_examples, "learner.method.buffer_size",
                f"at most {stream.train_examples}, the training examples of the whole stream", self.buffer.size)

    def replay_batch(self, n: int) -> Batch | None:
        return self.buffer.sample(self.replay_batch_size) if len(self.buffer) else None

    def replay_loss(self, logits: torch.Tensor, replay: Batch) -> torch.Tensor:
        return F.cross_entropy(logits, replay["y"])

    def after_step(self, batch: Batch, logits: torch.Tensor) -> None:
        if not self.fill_at_task_end:
            self.buffer.add({"x": batch["x"], "y": batch["y"], "task": batch["task"]})

    def after_task(self, task: int, learner: "ContinualLearner") -> None:
        if self.fill_at_task_end:
            x, y = learner.task_training_data(task)
            self.buffer.add_task({"x": x, "y": y, "task": torch.full_like(y, task)})

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], learner: "ContinualLearner") -> None:
        self.buffer.load_state_dict(state["buffer"])


class DERPlusPlus(ExperienceReplay):
    """Dark Experience Replay++ (Buzzega et al. 2020): the buffer keeps the logits seen at insertion.

    Loss on replay: ``alpha * MSE(logits, stored logits)`` on one buffer sample plus
    ``beta * CE(logits, labels)`` on a second, independent one (both go through the same forward).
    """

    name = "derpp"

    def __init__(self, buffer_size: int = 500, replay_batch_size: int = 32, alpha: float = 0.1, beta: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__(buffer_size, replay_batch_size, seed)
        require(alpha >= 0, "learner.method.alpha", ">= 0", alpha)
        require(beta >= 0, "learner.method.beta", ">= 0", beta)
        self.alpha, self.beta = alpha, beta

    def replay_batch(self, n: int) -> Batch | None:
        if not len(self.buffer):
            return None
        first, second = self.buffer.sample(self.replay_batch_size), self.buffer.sample(self.replay_batch_size)
        out = {k: torch.cat([first[k], second[k]]) for k in first}
        out["n_logit_part"] = torch.tensor(len(first["y"]))
        return out

    def replay_loss(self, logits: torch.Tensor, replay: Batch) -> torch.Tensor:
        k = int(replay["n_logit_part"])
        logit_term = F.mse_loss(logits[:k], replay["logits"][:k])
        label_term = F.cross_entropy(logits[k:], replay["y"][k:])
        return self.alpha * logit_term + self.beta * label_term

    def after_step(self, batch: Batch, logits: torch.Tensor) -> None:
        self.buffer.add({"x": batch["x"], "y": batch["y"], "task": batch["task"], "logits": logits.float()})


class LwF(ContinualMethod):
    """Learning without Forgetting (Li & Hoiem 2017) on a single head.

    From the second task on, a frozen copy of the network from the end of the previous task gives soft
    targets for the old classes on the current batch: ``alpha * T^2 * KL(old/T || new/T)`` over them.

    ``teacher_bn`` says which batch-norm statistics the frozen copy normalises with: ``running`` (its
    stored statistics, i.e. evaluation mode, as Mammoth computes LwF's targets) or ``batch`` (the
    current batch's own, as Avalanche's LwF, whose copy stays in training mode). They differ because
    the current task's images shift the statistics away from the ones the old network was trained with;
    ``batch`` is the default because it kept more of the old tasks on Split CIFAR-10 at our budget.
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0, teacher_bn: str = "batch") -> None:
        require(alpha >= 0, "learner.method.alpha", ">= 0", alpha)
        require(temperature > 0, "learner.method.temperature", "> 0", temperature)
        require(teacher_bn in ("running", "batch"), "learner.method.teacher_bn", "running or batch", teacher_bn)
        self.alpha, self.temperature, self.teacher_bn = alpha, temperature, teacher_bn
        self.previous: nn.Module | None = None
        self.old_classes = 0

    def before_task(self, task: int, learner: "ContinualLearner") -> None:
        if task == 0:
            return
        self.previous = self._teacher(learner.net)
        self.old_classes = task * learner.stream_info.classes_per_task

    def _teacher(self, net: nn.Module) -> nn.Module:
        teacher = _frozen_copy(net)
        if self.teacher_bn == "batch":
            for module in teacher.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()  # normalise with the batch's statistics...
                    module.momentum = 0.0  # ...and leave the stored ones as they are
        return teacher

    def penalty(self, learner: "ContinualLearner", batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        if self.previous is None:
            return None
        k, t = self.old_classes, self.temperature
        with torch.no_grad():
            targets = torch.softmax(self.previous(learner.prepare(batch["x"]))[:, :k].float() / t, dim=-1)
        log_probs = torch.log_softmax(logits[:, :k].float() / t, dim=-1)
        return self.alpha * t * t * F.kl_div(log_probs, targets, reduction="batchmean")

    def state_dict(self) -> dict[str, Any]:
        return {"old_classes": self.old_classes,
                "previous": None if self.previous is None else self.previous.state_dict()}

    def load_state_dict(self, state: dict[str, Any], learner: "ContinualLearner") -> None:
        self.old_classes = state["old_classes"]
        if state["previous"] is not None:
            self.previous = self._teacher(learner.net)
            self.previous.load_state_dict(state["previous"])


def _frozen_copy(net: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(net).eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


def check_method(method: object) -> ContinualMethod:
    if not isinstance(method, ContinualMethod):
        raise ConfigError(f"learner.method must instantiate a metalab.learners.continual.methods.ContinualMethod; "
                          f"got {type(method).__name__}")
    return method
