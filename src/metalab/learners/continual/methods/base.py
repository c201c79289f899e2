"""What every continual method shares: the contract with the loop, the replay value, and fine-tuning.

A method never trains. The one step (:func:`metalab.learners.continual.loop.continual_step`) does one
forward over the current batch plus whatever :meth:`ContinualMethod.replay_batch` adds, cross-entropy on
the current batch, :meth:`~ContinualMethod.replay_loss` and :meth:`~ContinualMethod.penalty`, the
optimiser step, then :meth:`~ContinualMethod.after_optimizer_step` and :meth:`~ContinualMethod.after_step`.
The learner calls :meth:`~ContinualMethod.before_task` and :meth:`~ContinualMethod.after_task` at task
boundaries. Every hook takes the learner first, as a :class:`ContinualLearnerView`: the only members of
the learner a method may use, so a method can run under the Lightning learner or the plain one
(:class:`metalab.learners.continual.loop.PlainLearner`) alike.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from metalab.errors import ConfigError

Batch = dict[str, torch.Tensor]  # {"x": [n, ...], "y": [n], "task": [n]}


@dataclass
class StreamInfo:
    """What a method may know about the stream before training starts."""

    n_tasks: int
    classes_per_task: int
    train_examples: int  # over all tasks (what a buffer could ever hold)
    example_x: torch.Tensor  # one input ``[1, c, h, w]``, for shape inference
    n_classes: int | None = None  # outputs of the single head (None: n_tasks * classes_per_task, a class split)
    scenarios: tuple[str, ...] = ("class_il", "task_il")  # how the stream is evaluated

    def __post_init__(self) -> None:
        if self.n_classes is None:
            self.n_classes = self.n_tasks * self.classes_per_task

    @property
    def task_ids_at_test(self) -> bool:
        """Whether evaluation gives the task of each example (task-IL); domain-IL and class-IL do not."""
        return "task_il" in self.scenarios

    def classes_before(self, task: int) -> int:
        """Outputs the tasks before ``task`` trained: ``task * classes_per_task`` in a class split; in a
        domain-incremental stream every task has all the classes, so all of them from task 1 on."""
        return min(task * self.classes_per_task, self.n_classes)


@runtime_checkable
class ContinualLearnerView(Protocol):
    """The members of a continual learner that methods may use, and nothing else.

    Implemented by :class:`~metalab.learners.continual.ContinualLearner` (Lightning) and by
    :class:`~metalab.learners.continual.loop.PlainLearner` (a bare network and optimiser, for tests and
    the plain-PyTorch floor of the benchmarks).
    """

    net: nn.Module
    stream_info: StreamInfo | None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs in the memory format the network expects."""
        ...

    def trainable_parameters(self, names: list[str]) -> list[nn.Parameter]:
        """The network's parameters of these names, in this order."""
        ...

    def task_training_data(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All training inputs ``[n, ...]`` and labels ``[n]`` of ``task`` alone."""
        ...

    def optimizers(self) -> Any:
        """The optimiser that takes the training steps (possibly wrapped by Lightning)."""
        ...


@dataclass(frozen=True)
class Replay:
    """Stored examples appended to the current batch (one forward over both).

    ``x`` holds ``len(logits) + len(labels)`` examples: the first ``len(logits)`` are scored against
    the logits stored with them (DER++), the rest against their labels. ER has no stored logits.
    """

    x: torch.Tensor  # "m ..."
    labels: torch.Tensor  # "m_labels"
    logits: torch.Tensor | None = None  # "m_logits classes"

    def __post_init__(self) -> None:
        stored = 0 if self.logits is None else len(self.logits)
        if stored + len(self.labels) != len(self.x):
            raise ValueError(
                f"replay of {len(self.x)} examples with {stored} stored logits and "
                f"{len(self.labels)} labels: the two parts must cover the examples exactly"
            )

    @property
    def n_logit_rows(self) -> int:
        """How many of the first examples are scored against stored logits."""
        return 0 if self.logits is None else len(self.logits)


class ContinualMethod:
    """Fine-tuning, and the hooks every method may override (all are no-ops here)."""

    name = "finetune"
    trains_on_all_seen_tasks = False  # joint training: the loader of task t serves tasks 0..t
    masks_training_logits_to_task = False  # loss only over the current task's classes (task-specific heads)
    needs_task_ids_at_test = False  # predicts through the test example's task (task heads, columns)

    # -- set-up (before the learner exists as a view) --------------------------------------------------------
    def build_network(self, backbone: nn.Module, stream: StreamInfo) -> nn.Module:
        """The network the learner trains; most methods train the backbone itself."""
        return backbone

    def setup(self, stream: StreamInfo) -> None:
        """Check the method's settings against the stream (raise :class:`ConfigError`)."""

    # -- hooks: the learner first, always ----------------------------------------------------------------------
    def before_task(self, learner: ContinualLearnerView, task: int) -> None:
        """Called at the first epoch of ``task``."""

    def replay_batch(self, learner: ContinualLearnerView, n: int) -> Replay | None:
        """Examples to append to the current batch of ``n`` (same forward pass), or ``None``."""
        return None

    def replay_loss(self, learner: ContinualLearnerView, logits: torch.Tensor, replay: Replay) -> torch.Tensor:
        """Loss on the replayed part of the forward pass (``logits [m, classes]``)."""
        raise NotImplementedError(f"{type(self).__name__} replays examples but defines no replay_loss")

    def penalty(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        """A regulariser added to the loss (``None``: none)."""
        return None

    def after_optimizer_step(self, learner: ContinualLearnerView) -> None:
        """Called after every optimiser step (parameters already updated)."""

    def after_step(self, learner: ContinualLearnerView, batch: Batch, logits: torch.Tensor) -> None:
        """Called at the end of every training step with the current batch and its (detached) logits,
        as computed before the optimiser step."""

    def after_task(self, learner: ContinualLearnerView, task: int) -> None:
        """Called after the last epoch of ``task``, before the evaluation of all tasks."""

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, learner: ContinualLearnerView, state: dict[str, Any]) -> None:
        pass


class Finetune(ContinualMethod):
    """Plain sequential training: the lower bound every method must beat."""


class Joint(ContinualMethod):
    """Training on all data seen so far at each task: the upper bound (not a continual method)."""

    name = "joint"
    trains_on_all_seen_tasks = True


def frozen_copy(net: nn.Module) -> nn.Module:
    """An evaluation-mode copy of ``net`` whose parameters take no gradient."""
    copy_ = copy.deepcopy(net).eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


def check_method_fits(method: ContinualMethod, stream: StreamInfo) -> None:
    """Refuse a method that needs the task id at test time on a stream that does not give it (domain-IL)."""
    if (method.needs_task_ids_at_test or method.masks_training_logits_to_task) and not stream.task_ids_at_test:
        raise ConfigError(
            f"learner.method={method.name} needs the task id of each test example (task-specific "
            f"heads or columns), but this stream is evaluated as {' / '.join(stream.scenarios)}, "
            "where the task is not given; choose a method with a single head (one whose "
            "needs_task_ids_at_test and masks_training_logits_to_task are False) or a class-split stream"
        )


def check_method(method: object) -> ContinualMethod:
    if not isinstance(method, ContinualMethod):
        raise ConfigError(
            f"learner.method must instantiate a metalab.learners.continual.methods.ContinualMethod; "
            f"got {type(method).__name__}"
        )
    return method
