"""How a model meets a target domain: small adaptation objects, one per method, chosen in config.

Each takes the model trained on the source domains and one test episode (:class:`Episode`: ``k`` labelled
target images per class, the target's unlabelled pool, a labelled source sample) and returns the model to
score on the target's test images. They never change the model they are given (they adapt a copy), and
draw their randomness (initialisation, mini-batches) from the episode's own seed, so a method's result
does not depend on what ran before it.

- :class:`SourceOnly`: no adaptation, the source model as it is (the floor for using unlabelled data);
- :class:`Scratch`: a freshly initialised network trained on the ``k``-shot target data alone (the floor
  for using the source at all);
- :class:`FineTune`: the source model trained on the ``k``-shot data, its linear head only (``part: head``,
  a linear probe on the source features) or every weight (``part: all``);
- :class:`Coral`: Deep CORAL (Sun & Saenko 2016; :func:`metalab.adapt.alignment.coral_loss`): training
  continues on labelled source batches while the CORAL loss aligns the feature covariances of source and
  unlabelled target batches, plus, with ``labelled_weight`` > 0, the cross-entropy of the ``k`` labelled
  target images (semi-supervised); ``labelled_weight: 0`` uses no target label at all (unsupervised).

MAML and Reptile are not here: their adaptation is their own inner loop (:mod:`metalab.learners.meta.maml`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metalab.adapt.alignment import coral_loss
from metalab.errors import ConfigError, require

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class Episode:
    """One target episode, without the task axis: images ``[n, c, h, w]``, labels ``[n]``."""

    support: torch.Tensor
    support_labels: torch.Tensor
    unlabelled: torch.Tensor
    source: torch.Tensor
    source_labels: torch.Tensor
    seed: int


class Adaptation:
    """Base: ``adapt(model, episode) -> model``; says whether it needs labelled target images and whether it
    starts from the source model (the learner trains one only if so)."""

    needs_labels = False
    starts_from_source = True

    def adapt(self, model: nn.Module, episode: Episode) -> nn.Module:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class SourceOnly(Adaptation):
    """The source model, unchanged."""

    def adapt(self, model: nn.Module, episode: Episode) -> nn.Module:
        return model


class FineTune(Adaptation):
    """``steps`` optimiser steps of cross-entropy on the ``k``-shot target images (mini-batches of ``batch``,
    or all of them at each step with ``batch: null``), on the head only or on every weight."""

    needs_labels = True
    PARTS = ("head", "all")

    def __init__(
        self,
        part: str = "all",
        steps: int = 100,
        lr: float = 1e-3,
        optimizer: str = "adam",
        batch: int | None = None,
        weight_decay: float = 0.0,
    ) -> None:
        require(part in self.PARTS, "learner.adaptation.part", f"one of {', '.join(self.PARTS)}", part)
        _check_loop(steps, lr, optimizer, batch)
        self.part, self.steps, self.lr, self.optimizer, self.batch = part, steps, lr, optimizer, batch
        self.weight_decay = weight_decay

    def describe(self) -> str:
        return f"{type(self).__name__}(part={self.part})"

    def adapt(self, model: nn.Module, episode: Episode) -> nn.Module:
        adapted = copy.deepcopy(model).train()
        x, y = episode.support, episode.support_labels
        gen = torch.Generator().manual_seed(episode.seed)
        if self.part == "head":  # a linear probe: the frozen source features once, then only the head learns
            with torch.no_grad():
                x = adapted.features(x)
            forward, params = adapted.head, list(adapted.head.parameters())
        else:
            forward, params = adapted, list(adapted.parameters())
        optimizer = OPTIMIZERS[self.optimizer](params, lr=self.lr, weight_decay=self.weight_decay)
        with torch.enable_grad():
            for _ in range(self.steps):
                rows = _rows(len(y), self.batch, gen)
                optimizer.zero_grad()
                F.cross_entropy(forward(x[rows]), y[rows]).backward()
                optimizer.step()
        return adapted.eval()


class Scratch(FineTune):
    """A network of the same architecture, initialised afresh (from the episode's seed), trained on the
    ``k``-shot target images alone."""

    starts_from_source = False

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("part", "all")
        require(
            kwargs["part"] == "all", "learner.adaptation.part", "all (a new network trains everything)", kwargs["part"]
        )
        super().__init__(**kwargs)

    def adapt(self, model: nn.Module, episode: Episode) -> nn.Module:
        fresh = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(episode.seed)
            for module in fresh.modules():
                if module is not fresh and callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
        return super().adapt(fresh, episode)


class Coral(Adaptation):
    """Deep CORAL (Sun & Saenko 2016, ECCV Workshops): ``steps`` steps of

    ``CE(source batch) + coral_weight * CORAL(features(source batch), features(unlabelled target batch))
    + labelled_weight * CE(k-shot target images)``

    from the source model, on the features the head reads (``layer: features``) or on the logits
    (``layer: logits``, where Sun & Saenko put it, after fc8)."""

    LAYERS = ("features", "logits")

    def __init__(
        self,
        coral_weight: float = 1.0,
        labelled_weight: float = 1.0,
        steps: int = 200,
        lr: float = 1e-3,
        optimizer: str = "adam",
        batch: int = 64,
        layer: str = "features",
    ) -> None:
        _check_loop(steps, lr, optimizer, batch)
        require(coral_weight >= 0, "learner.adaptation.coral_weight", ">= 0", coral_weight)
        require(labelled_weight >= 0, "learner.adaptation.labelled_weight", ">= 0", labelled_weight)
        require(layer in self.LAYERS, "learner.adaptation.layer", f"one of {', '.join(self.LAYERS)}", layer)
        self.coral_weight, self.labelled_weight, self.layer = coral_weight, labelled_weight, layer
        self.steps, self.lr, self.optimizer, self.batch = steps, lr, optimizer, batch
        self.needs_labels = labelled_weight > 0

    def describe(self) -> str:
        return f"Coral(coral_weight={self.coral_weight}, labelled_weight={self.labelled_weight}, layer={self.layer})"

    def adapt(self, model: nn.Module, episode: Episode) -> nn.Module:
        adapted = copy.deepcopy(model).train()
        gen = torch.Generator().manual_seed(episode.seed)
        optimizer = OPTIMIZERS[self.optimizer](adapted.parameters(), lr=self.lr)
        xs, ys, xt = episode.source, episode.source_labels, episode.unlabelled
        labelled = self.labelled_weight > 0 and len(episode.support_labels) > 0
        with torch.enable_grad():
            for _ in range(self.steps):
                s, t = _rows(len(ys), self.batch, gen), _rows(len(xt), self.batch, gen)
                feats = adapted.features(torch.cat([xs[s], xt[t]]))
                logits = adapted.head(feats)
                aligned = logits if self.layer == "logits" else feats
                loss = F.cross_entropy(logits[: len(s)], ys[s])
                loss = loss + self.coral_weight * coral_loss(aligned[: len(s)], aligned[len(s) :])
                if labelled:
                    loss = loss + self.labelled_weight * F.cross_entropy(
                        adapted(episode.support), episode.support_labels
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return adapted.eval()


def _rows(n: int, batch: int | None, gen: torch.Generator) -> torch.Tensor:
    """All ``n`` rows (``batch`` null or >= n), else ``batch`` of them drawn without replacement."""
    if batch is None or batch >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:batch]


def _check_loop(steps: int, lr: float, optimizer: str, batch: int | None) -> None:
    require(isinstance(steps, int) and steps >= 0, "learner.adaptation.steps", "an integer >= 0", steps)
    require(lr > 0, "learner.adaptation.lr", "> 0", lr)
    require(optimizer in OPTIMIZERS, "learner.adaptation.optimizer", f"one of {', '.join(OPTIMIZERS)}", optimizer)
    if batch is not None and (not isinstance(batch, int) or batch < 2):
        raise ConfigError(
            f"learner.adaptation.batch={batch!r} is not allowed: learner.adaptation.batch must be an integer >= 2 "
            "or null (all examples at every step)"
        )
