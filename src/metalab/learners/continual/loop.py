"""The continual loop's two plain functions, and a learner without Lightning.

:func:`continual_step` is the one training step and :func:`evaluate_all_tasks` the one per-task
evaluation; :class:`~metalab.learners.continual.ContinualLearner` calls them from Lightning's hooks, and
the plain-PyTorch floor of ``benchmarks/continual/loop_overhead.py`` calls them from a ``for`` loop with a
:class:`PlainLearner`, so the benchmark measures Lightning's overhead around the same work, not a copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metalab.data.streams import TaskStream, task_il_mask
from metalab.errors import ConfigError, NumericalError
from metalab.learners.continual.methods.base import Batch, ContinualLearnerView, ContinualMethod, StreamInfo

SCENARIOS = ("class_il", "task_il")  # the class splits' scenarios
ALL_SCENARIOS = ("class_il", "task_il", "domain_il")  # domain-IL: metalab.data.domain_streams


@dataclass(frozen=True)
class StepResult:
    loss: torch.Tensor  # the minimised loss, detached
    penalty: torch.Tensor | None  # the method's regulariser, detached (None: the method has none)
    logits: torch.Tensor  # "n classes": the current batch's logits before the update, detached
    skipped: bool = False  # the loss was not finite and the step was skipped (skip_nonfinite)


def current_task_loss(
    logits: torch.Tensor, y: torch.Tensor, task: int, classes_per_task: int, mask_to_task: bool
) -> torch.Tensor:
    """Cross-entropy on the current batch, over all classes or only the current task's (``mask_to_task``)."""
    if not mask_to_task:
        return F.cross_entropy(logits, y)
    lo = task * classes_per_task
    return F.cross_entropy(logits[:, lo : lo + classes_per_task], y - lo)


def continual_step(
    learner: ContinualLearnerView,
    method: ContinualMethod,
    batch: Batch,
    task: int,
    optimizer: Any,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    step: int = 0,
    skip_nonfinite: bool = False,
) -> StepResult:
    """One training step of ``method`` on ``batch`` of ``task``, the optimiser's step included.

    One forward over ``[batch; replayed examples]``, so replay costs only its extra examples; loss =
    cross-entropy on the batch + the method's replay loss + its penalty; then ``backward`` (Lightning's
    ``manual_backward`` or plain ``Tensor.backward``), the optimiser's step, and the method's
    ``after_optimizer_step`` and ``after_step`` hooks in that order. ``step`` only names the step in errors.
    ``skip_nonfinite``: a non-finite loss (or penalty) skips the step (no update, no method hook) and is
    returned with ``skipped=True`` instead of raising (the diagnosis callback, ``metalab.callbacks.diagnosis``).
    """
    x, y = batch["x"], batch["y"]
    n = len(y)
    replay = method.replay_batch(learner, n)
    inputs = x if replay is None else torch.cat([x, replay.x])
    logits_all = learner.net(learner.prepare(inputs))  # "(n + m) classes"
    logits = logits_all[:n]
    loss = current_task_loss(
        logits, y, task, learner.stream_info.classes_per_task, method.masks_training_logits_to_task
    )
    if replay is not None:
        loss = loss + method.replay_loss(learner, logits_all[n:], replay)
    penalty = method.penalty(learner, batch, logits)
    if penalty is not None:
        if not skip_nonfinite and not torch.isfinite(penalty):
            raise NumericalError(
                f"the {method.name} penalty became {penalty.item()} at step {step} (task {task}); "
                "check learner.method settings (e.g. ewc_lambda) and lower learner.optimizer.lr"
            )
        loss = loss + penalty
    if not torch.isfinite(loss):
        if skip_nonfinite:
            return StepResult(loss.detach(), None if penalty is None else penalty.detach(), logits.detach(), True)
        raise NumericalError(
            f"training loss became {loss.item()} at step {step} (task {task}); lower learner.optimizer.lr"
        )
    optimizer.zero_grad()
    backward(loss)
    optimizer.step()
    logits = logits.detach()
    method.after_optimizer_step(learner)
    method.after_step(learner, batch, logits)
    return StepResult(loss.detach(), None if penalty is None else penalty.detach(), logits)


def mini_batches(chunk: Batch, batch_size: int) -> Iterator[Batch]:
    """The mini-batches of ``batch_size`` a chunk of consecutive mini-batches was joined from (views, no copy);
    the last may be smaller, as the last mini-batch of a pass is."""
    parts = {key: value.split(batch_size) for key, value in chunk.items()}
    for i in range(len(parts["y"])):
        yield {key: value[i] for key, value in parts.items()}


# -- evaluation ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskScore:
    """Correct predictions per scenario and examples of one task."""

    correct: dict[str, int]
    total: int

    def accuracy(self, scenario: str) -> float:
        return 100.0 * self.correct[scenario] / self.total


def scenario_predictions(
    logits: torch.Tensor, task_ids: torch.Tensor | None, classes_per_task: int, scenarios: Sequence[str] = SCENARIOS
) -> dict[str, torch.Tensor]:
    """Predicted classes ``[n]`` per scenario.

    class-IL and domain-IL take the argmax over every output (domain-IL: every task has the same classes
    and the task is not given); task-IL masks the other tasks' classes first (:func:`task_il_mask`).
    """
    predicted: dict[str, torch.Tensor] = {}
    for scenario in scenarios:
        if scenario in ("class_il", "domain_il"):
            predicted[scenario] = logits.argmax(-1)
        elif scenario == "task_il":
            mask = task_il_mask(task_ids, logits.shape[-1], classes_per_task)
            predicted[scenario] = logits.masked_fill(~mask, float("-inf")).argmax(-1)
        else:
            raise ConfigError(f"unknown continual scenario {scenario!r}: must be one of {', '.join(ALL_SCENARIOS)}")
    return predicted


@torch.no_grad()
def evaluate_task(
    net: nn.Module,
    batches: Iterable[Batch],
    classes_per_task: int,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scenarios: Sequence[str] = SCENARIOS,
) -> TaskScore:
    """Correct counts per scenario of ``net`` (in the mode it is in) over one task's batches."""
    correct = dict.fromkeys(scenarios, 0)
    total = 0
    for batch in batches:
        with forward_context():
            logits = net(prepare(batch["x"])).float()
        for scenario, predicted in scenario_predictions(logits, batch.get("task"), classes_per_task, scenarios).items():
            correct[scenario] += int((predicted == batch["y"]).sum())
        total += len(batch["y"])
    return TaskScore(correct, total)


def evaluate_all_tasks(
    net: nn.Module,
    stream: TaskStream,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> list[TaskScore]:
    """:func:`evaluate_task` on every task of ``stream``'s test split in each of the stream's scenarios, in
    evaluation mode (restored after)."""
    was_training = net.training
    net.eval()
    try:
        return [
            evaluate_task(
                net, stream.task_test_loader(task), stream.classes_per_task, prepare, forward_context, stream.scenarios
            )
            for task in range(stream.n_tasks)
        ]
    finally:
        net.train(was_training)


# -- a learner without Lightning -------------------------------------------------------------------------------
class NetworkMembers:
    """``prepare`` and ``trainable_parameters`` of :class:`ContinualLearnerView`, written once for the
    Lightning learner and :class:`PlainLearner`. Both need only ``net``, ``channels_last`` and an index of
    the network's parameters, built by :meth:`index_parameters` once the network's memory format is final
    (a lookup per step instead of walking the module tree). ``task_training_data`` stays with each class:
    the learner reads the stream, :class:`PlainLearner` the tensors it was given."""

    net: nn.Module
    channels_last: bool
    _param_index: dict[str, nn.Parameter]

    def index_parameters(self) -> None:
        self._param_index = dict(self.net.named_parameters())

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the network was converted to (channels-last is ~1.5x on CPU)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def trainable_parameters(self, names: list[str]) -> list[nn.Parameter]:
        return [self._param_index[n] for n in names]


class PlainLearner(NetworkMembers):
    """A :class:`ContinualLearnerView` over a bare network, optimiser and the tasks' training tensors.

    For unit tests of methods and for the benchmarks' plain-PyTorch floor: it holds exactly what the
    contract names, so a method that runs here uses nothing else of the Lightning learner.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        tasks: Sequence[tuple[torch.Tensor, torch.Tensor]],
        stream_info: StreamInfo | None = None,
        channels_last: bool = False,
    ) -> None:
        self.net, self.optimizer, self.tasks = net, optimizer, list(tasks)
        self.stream_info, self.channels_last = stream_info, channels_last
        self.index_parameters()

    def task_training_data(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tasks[task]

    def optimizers(self) -> torch.optim.Optimizer | None:
        return self.optimizer
