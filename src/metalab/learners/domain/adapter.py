"""Domain adaptation as an episodic learner: train on the source domains, adapt to each target episode.

``fit`` trains the network with cross-entropy on labelled source batches (``data.train: batches`` of
:class:`metalab.data.domain_shift.RotatedDomains`); a method that does not start from the source model
(:class:`~metalab.learners.domain.adaptations.Scratch`) runs with ``trainer.max_steps=0``. ``test`` hands
every target episode to the configured adaptation (``learner.adaptation``, one object of
:mod:`metalab.learners.domain.adaptations`) and scores the adapted copy on the target's test images, so the
rest is :class:`~metalab.learners.meta.episodic.EpisodicLearner`'s: ``test/r<angle>_k<k>/acc`` per target and
``k`` with its 95% interval over episodes. MAML and Reptile run on the same data as episodic learners of
their own, so every method is scored on the same episodes.

Beside each target's accuracy the test logs how far the target is from the source *under the source model's
features* (before any adaptation): ``test/<name>/mmd`` (linear MMD) and ``test/<name>/pad`` (proxy
A-distance), from the episode's source sample and the target's unlabelled pool
(:mod:`metalab.metrics.domain`); ``experiments/domain_adaptation/summary.py`` correlates them with transfer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metalab.errors import ConfigError
from metalab.learners.domain.adaptations import Adaptation, Episode
from metalab.learners.meta.episodic import Batch, EpisodicLearner
from metalab.metrics.domain import linear_mmd2, proxy_a_distance


class DomainAdapter(EpisodicLearner):
    """A source model trained by supervised learning, adapted per test episode by ``adaptation``."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        adaptation: Adaptation,
        scheduler: Callable[..., Any] | None = None,
        similarity: bool = True,
        eval_chunk: int = 1000,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, channels_last=False)
        if not isinstance(adaptation, Adaptation):
            raise ConfigError(
                f"learner.adaptation={adaptation!r} is not allowed: learner.adaptation must be an adaptation "
                "given by its _target_, e.g. metalab.learners.domain.adaptations.FineTune"
            )
        for part in ("features", "head"):
            if not hasattr(backbone, part):
                raise ConfigError(
                    f"model={type(backbone).__name__} is not allowed for learner.adaptation: the network needs "
                    "features() and head (e.g. metalab.models.lenet.LeNet)"
                )
        self.adaptation, self.similarity, self.eval_chunk = adaptation, similarity, eval_chunk
        self.distances: dict[int, dict[str, list[float]]] = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        shots = getattr(self.trainer.datamodule, "shots", []) if self._trainer else []
        if self.adaptation.needs_labels and 0 in shots:
            raise ConfigError(
                f"data.shots={list(shots)} is not allowed with learner.adaptation={self.adaptation.describe()}: "
                "it trains on labelled target images, so every k must be >= 1"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self.backbone(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == batch["y"]).float().mean() * 100, prog_bar=True)
        return loss

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.similarity and self.adaptation.starts_from_source:
            self._measure_distance(batch, dataloader_idx)
        super().test_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        for index, figures in sorted(self.distances.items()):
            for key, values in figures.items():
                name = self.test_names[index]
                self.log(f"test/{name}/{key}", sum(values) / len(values), add_dataloader_idx=False)
        self.distances = {}
        super().on_test_epoch_end()

    def query_logits(self, batch: Batch) -> torch.Tensor:
        """``"1 n 10"`` logits of the target's test images after adapting a copy of the source model."""
        if batch["support"].shape[0] != 1:
            raise ConfigError("domain-adaptation episodes come one at a time (a task axis of 1)")
        episode = Episode(
            support=batch["support"][0],
            support_labels=batch["support_labels"][0],
            unlabelled=batch["unlabelled"][0],
            source=batch["source"][0],
            source_labels=batch["source_labels"][0],
            seed=int(batch["seed"][0]),
        )
        model = self.adaptation.adapt(self.backbone, episode)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in batch["query"][0].split(self.eval_chunk)])
        model.train(was_training)
        return logits.unsqueeze(0)

    @torch.no_grad()
    def _measure_distance(self, batch: Batch, index: int) -> None:
        """Linear MMD and proxy A-distance between source and target features of the unadapted model."""
        source = torch.cat([self.backbone.features(c) for c in batch["source"][0].split(self.eval_chunk)])
        target = torch.cat([self.backbone.features(c) for c in batch["unlabelled"][0].split(self.eval_chunk)])
        gen = torch.Generator().manual_seed(int(batch["seed"][0]))
        figures = self.distances.setdefault(index, {"mmd": [], "pad": []})
        figures["mmd"].append(float(linear_mmd2(source, target)))
        figures["pad"].append(proxy_a_distance(source, target, generator=gen))

    def run_record(self) -> dict[str, Any]:
        """The adaptation that made the figures, in the run's metrics.json."""
        return {"adaptation": self.adaptation.describe()}
