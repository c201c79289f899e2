"""The part every episodic meta-learner shares: losses, metrics, optimisers, checks.

A learner only says how it turns an episode batch into query logits (:meth:`query_logits`); this base
does the rest the same way for all of them: cross-entropy training, per-episode accuracy with a 95%
confidence interval on each validation and test episode shape, the optimiser and step-wise learning
rate schedule from config, and a clear stop when the loss turns NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from metalab.adapt.engine import task_losses
from metalab.errors import NumericalError
from metalab.metrics.fewshot import MeanWithCI, episode_accuracy

Batch = dict[str, torch.Tensor]


class EpisodicLearner(L.LightningModule):
    """Base of the meta-learners; subclasses implement :meth:`query_logits`."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last = channels_last
        self.val_acc = MeanWithCI()
        self.test_acc = nn.ModuleList()
        # Set by the diagnosis callback (metalab.callbacks.diagnosis.SkipsNonFiniteSteps): skip, not raise.
        self.skip_nonfinite_steps = False
        self.skipped_steps: list[dict[str, Any]] = []

    # -- what a learner defines ------------------------------------------------------------------
    def query_logits(self, batch: Batch) -> torch.Tensor:
        """``"task (way query) way"`` logits of the query images, after whatever adaptation."""
        raise NotImplementedError

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss to minimise and the per-task accuracy; default: cross-entropy on the query logits."""
        outputs = self.query_logits(batch)
        return task_losses(outputs, batch["query_labels"]).mean(), self.episode_score(outputs, batch["query_labels"])

    # -- shared machinery --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        names = getattr(self.trainer.datamodule, "test_names", ["test"]) if self._trainer else ["test"]
        if len(self.test_acc) != len(names):
            self.test_acc = nn.ModuleList(MeanWithCI() for _ in names)
        self.test_names = names

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Put an image batch in the memory format the backbone was converted to (1.6x on CPU)."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        loss, acc = self.training_loss(batch)
        if self.skips_nonfinite(loss):
            return None  # Lightning's automatic optimisation takes no step for this batch
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        self.log(f"train/{self.score_name}", acc.mean() * self.score_scale, prog_bar=True)
        return loss

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop with a message naming the step instead of training on (and logging) NaN."""
        if not torch.isfinite(loss):
            raise NumericalError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower learner.optimizer.lr or check the data"
            )

    def skips_nonfinite(self, loss: torch.Tensor) -> bool:
        """True if ``loss`` is not finite and the step is to be skipped (``skip_nonfinite_steps``): recorded
        in ``skipped_steps`` for the diagnosis callback, which restores what the forward pass changed."""
        if not self.skip_nonfinite_steps or bool(torch.isfinite(loss)):
            return False
        self.skipped_steps.append({"step": self.global_step, "loss": loss.item()})
        return True

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_acc.update(self._eval_accuracy(batch))

    def on_validation_epoch_end(self) -> None:
        stats = self.val_acc.compute()
        self.log(f"val/{self.score_name}", stats["mean"] * self.score_scale, prog_bar=True)
        self.log(f"val/{self.score_name}_ci95", stats["ci95"] * self.score_scale)
        self.val_acc.reset()

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_acc[dataloader_idx].update(self._eval_accuracy(batch))

    def on_test_epoch_end(self) -> None:
        for name, metric in zip(self.test_names, self.test_acc):
            stats = metric.compute()
            self.log(f"test/{name}/{self.score_name}", stats["mean"] * self.score_scale, add_dataloader_idx=False)
            self.log(f"test/{name}/{self.score_name}_ci95", stats["ci95"] * self.score_scale, add_dataloader_idx=False)
            self.log(f"test/{name}/episodes", stats["n"], add_dataloader_idx=False)
            metric.reset()

    def episode_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-task score: accuracy for classification, mean squared error for regression."""
        self.regression = targets.is_floating_point()
        if self.regression:
            return task_losses(outputs, targets).detach()
        return episode_accuracy(outputs, targets)

    @property
    def score_name(self) -> str:
        return "mse" if getattr(self, "regression", False) else "acc"

    @property
    def score_scale(self) -> float:
        """Accuracies are reported in percent, errors as they are."""
        return 1.0 if getattr(self, "regression", False) else 100.0

    def _eval_accuracy(self, batch: Batch) -> torch.Tensor:
        return self.episode_score(self.query_logits(batch), batch["query_labels"])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # Schedules are counted in meta-updates (episodes for ProtoNets), as in the papers.
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def way_of(batch: Batch) -> int:
    """Number of classes of the episodes in ``batch`` (labels are class-major ``0..way-1``)."""
    return int(batch["support_labels"][0, -1]) + 1
