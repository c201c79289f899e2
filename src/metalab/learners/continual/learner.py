"""The one continual training loop; methods (the ``methods`` package) plug into its hooks.

One ``Trainer.fit`` covers the whole stream: ``n_tasks * epochs_per_task`` epochs, the data module
serving the current task's loader (reloaded every epoch). At the first epoch of a task the method's
``before_task`` runs; at the last, its ``after_task``, then every task of the stream is evaluated and
becomes one row of the accuracy matrix ``R`` (class-IL and task-IL for a class split, domain-IL for a
domain-incremental stream). Row 0 is the initial model, for
forward transfer. ``Trainer.test`` evaluates the final model on every task and logs average accuracy,
forgetting, BWT and FWT, writes ``continual_metrics.json`` and a heatmap of ``R`` per scenario.

Each step is :func:`~metalab.learners.continual.loop.continual_step` (with Lightning's manual
optimisation, so the step, the optimiser's step and the hooks after it are one plain function) and each
evaluation :func:`~metalab.learners.continual.loop.evaluate_all_tasks`: a benchmark
(``benchmarks/continual/loop_overhead.py``) runs the same two functions from a plain PyTorch loop.

Only Lightning's public API is used: the stream names the Trainer arguments it needs
(:meth:`~metalab.data.streams.TaskStream.trainer_arguments`, passed by :func:`metalab.run.build_run`), steps go
through ``manual_backward`` and the ``LightningOptimizer``, and the learner counts its own training batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from metalab.data.streams import TaskStream
from metalab.errors import ConfigError
from metalab.learners.continual.loop import (
    NetworkMembers,
    StepResult,
    continual_step,
    evaluate_all_tasks,
    mini_batches,
    scenario_predictions,
)
from metalab.learners.continual.methods import Batch, ContinualMethod, StreamInfo, check_method, check_method_fits
from metalab.metrics.continual import AccuracyMatrix, plot_accuracy_matrix, summarise


class ContinualLearner(NetworkMembers, L.LightningModule):
    """Trains ``backbone`` on a :class:`~metalab.data.streams.TaskStream` task after task with ``method``.

    ``optimizer``: a partial optimiser (e.g. SGD, lr 0.03, no momentum as in Mammoth), built once for the
    whole stream. ``evaluate_initial``: evaluate the untrained model (row 0 of R, needed for FWT).
    ``batches_per_step``: mini-batches trained per Lightning batch (the stream joins them; each is still
    one :func:`continual_step`, so training is unchanged). Lightning's per-batch machinery costs more than
    a small model's step (about 1.4 ms against 1 ms for the Split MNIST MLP at batch 10 on the 2-core
    EPYC), and a chunk pays it once. What happens per Lightning batch (callbacks' batch hooks, the logger's
    writes every ``log_every_n_steps`` batches, a stop by signal or ``max_time``) happens per chunk; with
    ``trainer.max_steps`` set the learner takes one mini-batch per Lightning batch, so the run stops at
    that exact step.
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: ContinualMethod,
        optimizer: Callable[..., torch.optim.Optimizer],
        channels_last: bool = True,
        evaluate_initial: bool = True,
        plot: bool = True,
        batches_per_step: int = 1,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # the step, optimiser step included, is continual_step
        self.net = backbone
        self.method = check_method(method)
        self.optimizer_factory = optimizer
        self.channels_last, self.evaluate_initial, self.plot = channels_last, evaluate_initial, plot
        if not (isinstance(batches_per_step, int) and batches_per_step >= 1):
            raise ConfigError(f"learner.batches_per_step={batches_per_step!r} is not allowed: must be an integer >= 1")
        self.batches_per_step = batches_per_step
        self.batches_trained = 0  # Lightning batches trained over the stream (saved in checkpoints; see _log_step)
        self.stream_info: StreamInfo | None = None
        self.accuracy: nn.ModuleDict | None = None  # R during training: row 0 initial, row i+1 after task i
        self.final: nn.ModuleDict | None = None  # the test pass (one row)
        self._param_index: dict[str, nn.Parameter] = {}
        # Set by the diagnosis callback (metalab.callbacks.diagnosis.SkipsNonFiniteSteps): skip, not raise.
        self.skip_nonfinite_steps = False
        self.skipped_steps: list[dict[str, Any]] = []

    # -- set-up ------------------------------------------------------------------------------------------------
    @property
    def stream(self) -> TaskStream:
        stream = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(stream, TaskStream):
            raise ConfigError(
                "the continual learner needs a task stream (data=split_cifar10, split_mnist or "
                f"permuted_mnist: a metalab.data.streams.TaskStream); got {type(stream).__name__}"
            )
        return stream

    @property
    def scenarios(self) -> tuple[str, ...]:
        """The evaluation scenarios of the stream (class_il and task_il, or domain_il)."""
        return self.stream.scenarios

    def setup(self, stage: str) -> None:
        stream = self.stream
        stream.setup(stage)
        if self.stream_info is None:
            example = stream.train_tasks[0].x[:1]
            self.stream_info = StreamInfo(
                stream.n_tasks,
                stream.classes_per_task,
                stream.train_examples(),
                example,
                stream.n_classes,
                stream.scenarios,
            )
            check_method_fits(self.method, self.stream_info)
            self.method.setup(self.stream_info)
            self.net = self.method.build_network(self.net, self.stream_info)
            if self.channels_last and example.dim() == 4:
                self.net.to(memory_format=torch.channels_last)
            self.index_parameters()
            self.accuracy = nn.ModuleDict({s: AccuracyMatrix(stream.n_tasks) for s in stream.scenarios})
            self.final = nn.ModuleDict({s: AccuracyMatrix(stream.n_tasks) for s in stream.scenarios})
        stream.cumulative = self.method.trains_on_all_seen_tasks
        stops_at_a_step = self._trainer is not None and self.trainer.max_steps not in (None, -1)
        stream.batches_per_step = 1 if stops_at_a_step else self.batches_per_step
        if stage == "fit":
            self.check_trainer_fits(stream)

    def check_trainer_fits(self, stream: TaskStream) -> None:
        """The Trainer must have been built with the stream's :meth:`~TaskStream.trainer_arguments` (one fit over
        the whole stream, the loader reloaded each epoch); otherwise the run would silently train on task 0."""
        trainer, needed = self.trainer, stream.trainer_arguments()
        given = {
            "max_epochs": trainer.max_epochs,
            "reload_dataloaders_every_n_epochs": trainer.reload_dataloaders_every_n_epochs,
        }
        if trainer.fast_dev_run:  # debug: a few batches, whatever the stream's length
            given["max_epochs"] = needed["max_epochs"]
        wrong = {key: value for key, value in given.items() if value != needed[key]}
        if wrong:
            shown = ", ".join(f"trainer.{key}={value}" for key, value in wrong.items())
            raise ConfigError(
                f"{shown} is not allowed for a task stream: the continual learner needs "
                f"Trainer(**stream.trainer_arguments()) = {needed} (metalab.run.build_run passes them)"
            )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.net.parameters())

    # -- what methods use --------------------------------------------------------------------------------------
    @property
    def current_task(self) -> int:
        return min(self.current_epoch // self.stream.epochs_per_task, self.stream.n_tasks - 1)

    def task_training_data(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All training inputs ``[n, ...]`` and labels ``[n]`` of ``task`` alone."""
        part = self.stream.train_tasks[task]
        return part.x, part.y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    # -- the loop ----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.evaluate_initial and self.accuracy[self.scenarios[0]].rows_done() == 0:
            self.evaluate_all_tasks(row=0)

    def on_train_epoch_start(self) -> None:
        if self.current_epoch % self.stream.epochs_per_task == 0:
            self.method.before_task(self, self.current_task)
            self.net.train()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """One :func:`continual_step` per mini-batch of the (chunked) batch; logs the last one's loss."""
        task, optimizer = self.current_task, self.optimizers()
        for mini_batch in mini_batches(batch, self.stream.batch_size):
            result = continual_step(
                self,
                self.method,
                mini_batch,
                task,
                optimizer,
                backward=self.manual_backward,
                step=self.global_step,
                skip_nonfinite=self.skip_nonfinite_steps,
            )
            if result.skipped:
                self.skipped_steps.append({"step": self.global_step, "loss": result.loss.item()})
        self._log_step(result)
        self.batches_trained += 1
        return result.loss

    def _log_step(self, result: StepResult) -> None:
        """``self.log`` on the Lightning batches the logger writes (every ``trainer.log_every_n_steps``) and at
        epoch ends.

        Lightning's ``log`` costs about 2.5 ms a call on this CPU (it walks its result object every
        time), which was most of a Split MNIST step (0.3 ms of compute); the logger only writes every
        n-th batch, so the other calls bought nothing but a progress bar that refreshes every batch. The
        logger writes after the Lightning batch whose 1-based count over the run is a multiple of
        ``log_every_n_steps``; ``batches_trained`` (this batch not yet counted) is that count minus one.
        """
        trainer = self.trainer
        if (self.batches_trained + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.is_last_batch:
            if result.penalty is not None:
                self.log("train/penalty", result.penalty)
            self.log("train/loss", result.loss, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        if (self.current_epoch + 1) % self.stream.epochs_per_task:
            return
        task = self.current_task
        self.method.after_task(self, task)
        self.evaluate_all_tasks(row=task + 1)
        for scenario in self.scenarios:
            row = self.accuracy[scenario].compute()[task + 1, : task + 1]
            self.log(f"task_end/{scenario}/seen_acc", row.mean().float())

    def evaluate_all_tasks(self, row: int) -> None:
        """Accuracy on every task of the stream (in each of its scenarios) into row ``row`` of R."""
        scores = evaluate_all_tasks(self.net, self.stream, self.prepare, self.trainer.precision_plugin.forward_context)
        for task, score in enumerate(scores):
            for scenario in self.scenarios:
                self.accuracy[scenario].update(row, task, correct=score.correct[scenario], total=score.total)

    # -- test: the final model on every task, and the stream's summary -----------------------------------------
    def on_test_epoch_start(self) -> None:
        for metric in self.final.values():
            metric.reset()

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self.net(self.prepare(batch["x"])).float()
        predicted = scenario_predictions(logits, batch.get("task"), self.stream.classes_per_task, self.scenarios)
        for scenario in self.scenarios:
            self.final[scenario].update(0, dataloader_idx, predicted[scenario], batch["y"])

    def on_test_epoch_end(self) -> None:
        n = self.stream.n_tasks
        record: dict[str, Any] = {"method": self.method.name, "class_order": self.stream.class_order}
        for scenario in self.scenarios:
            final = self.final[scenario].compute()[0]  # "task"
            self.log(f"test/{scenario}/acc", final.mean().float())
            matrix = self.accuracy[scenario].compute()
            evaluated = self.accuracy[scenario].total > 0  # "row task"
            entry: dict[str, Any] = {"final": final.tolist(), "acc": float(final.mean())}
            if bool(evaluated[1:].all()):  # every task-end row exists: the run trained the whole stream
                r = matrix[1:].clone()
                r[-1] = final  # the test pass is the authoritative last row (same weights)
                initial = matrix[0] if bool(evaluated[0].all()) else None
                summary = summarise(r, initial)
                for key, value in summary.items():
                    if key != "acc":
                        self.log(f"test/{scenario}/{key}", torch.tensor(value, dtype=torch.float32))
                for i in range(n):
                    for j in range(n):
                        self.log(f"R/{scenario}/{i}_{j}", r[i, j].float())
                entry.update(summary, R=r.tolist(), initial=None if initial is None else initial.tolist())
                if self.plot:
                    path = Path(self.trainer.default_root_dir) / f"accuracy_matrix_{scenario}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    plot_accuracy_matrix(r, path, f"{self.method.name}: {scenario} R[i, j] (%)")
            record[scenario] = entry
        out = Path(self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "continual_metrics.json").write_text(json.dumps(record, indent=2))

    # -- checkpoints: method state (buffer, Fisher, old model, active column) ---------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["continual_method"] = self.method.state_dict()
        checkpoint["continual_batches_trained"] = self.batches_trained

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "continual_method" in checkpoint:
            self.method.load_state_dict(self, checkpoint["continual_method"])
        self.batches_trained = int(checkpoint.get("continual_batches_trained", 0))
