"""Shared by the continual benchmarks: compose our experiment configs, time epochs, evaluate a model.

Every benchmark builds its stream, backbone and optimiser from the same Hydra experiment files the
training runs use (``conf/experiment/split_*/``), so "the same work" is the same config, not a copy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from metalab.data.streams import SplitStreamDataModule
from metalab.learners.continual.loop import PlainLearner, evaluate_all_tasks
from metalab.metrics.continual import summarise

REPO = Path(__file__).resolve().parents[2]
RUNS = Path(os.environ.get("METALAB_CONTINUAL_RUNS", REPO / "logs" / "continual"))  # git-ignored


def experiment_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """The composed config of ``+experiment=<name>`` (e.g. ``split_mnist/ewc``) with ``overrides``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        # paths.output_dir normally comes from Hydra's run dir, which compose() does not create.
        return compose(config_name="train", overrides=[f"+experiment={name}", f"paths.output_dir={RUNS / 'scratch'}",
                                                       *(overrides or [])])


class EpochTimer(L.Callback):
    """Wall time of each training epoch (batches, replay and penalties; not the task-end Fisher or evaluation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.batches: list[int] = []
        self._start = 0.0
        self._n = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._n += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.batches.append(self._n)


def evaluate_row(model: torch.nn.Module, stream: SplitStreamDataModule, channels_last: bool = False
                 ) -> dict[str, list[float]]:
    """Class-IL and task-IL accuracy (%) of ``model`` on every task of ``stream`` (ours and peers alike),
    by the same evaluation our learner runs (:func:`metalab.learners.continual.loop.evaluate_all_tasks`)."""
    prepare = PlainLearner(model, None, [], channels_last=channels_last).prepare
    scores = evaluate_all_tasks(model, stream, prepare)
    return {scenario: [score.accuracy(scenario) for score in scores] for scenario in ("class_il", "task_il")}


def summary_from_rows(rows: list[dict[str, list[float]]], initial: dict[str, list[float]] | None) -> dict[str, Any]:
    """``{scenario: {acc, forgetting, bwt, fwt, R}}`` from the rows after each task."""
    result: dict[str, Any] = {}
    for scenario in ("class_il", "task_il"):
        r = torch.tensor([row[scenario] for row in rows], dtype=torch.float64)
        b = torch.tensor(initial[scenario], dtype=torch.float64) if initial else None
        result[scenario] = {**summarise(r, b), "R": r.tolist()}
    return result


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def avalanche_benchmark(stream: SplitStreamDataModule):
    """Avalanche's view of our stream: one experience per task, over the very tensors ours trains on."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    stream.setup("fit")

    def dataset(part):
        return _make_taskaware_tensor_classification_dataset(part.x, part.y, task_labels=0, targets=part.y)

    return benchmark_from_datasets(train=[dataset(p) for p in stream.train_tasks],
                                   test=[dataset(p) for p in stream.test_tasks])


def avalanche_strategy(name: str, method: Mapping[str, Any], **common: Any):
    """Avalanche's strategy for our method ``name`` (configured as ``method``, our ``learner.method``).

    Penalty weights are converted so the objectives match: Avalanche's EWC adds ``lambda * sum F d^2``
    (ours ``lambda / 2``), its LwF ``alpha * KL`` (ours ``alpha * T^2 * KL``).
    """
    from avalanche.training.supervised import EWC, LwF, Naive, Replay

    if name == "finetune":
        return Naive(**common)
    if name == "ewc":
        return EWC(ewc_lambda=float(method["ewc_lambda"]) / 2, mode="separate", **common)
    if name == "er_500":
        return Replay(mem_size=int(method["buffer_size"]), **common)
    if name == "lwf":
        t = float(method["temperature"])
        return LwF(alpha=float(method["alpha"]) * t ** 2, temperature=t, **common)
    raise ValueError(f"no Avalanche counterpart for {name!r}")


def our_batch_order(stream: SplitStreamDataModule):
    """An Avalanche plugin that replaces each training epoch's loader by our stream's batches.

    Ours draws the batch order from the seed and the stream-wide epoch index (Lightning's
    ``current_epoch``); the plugin counts epochs the same way, so both libraries see identical
    mini-batches in identical order and shuffling noise drops out of a side-by-side comparison.
    """
    from avalanche.core import SupervisedPlugin

    class OurBatchOrder(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0

        def before_training_epoch(self, strategy, *args, **kwargs):
            loader = stream.task_train_loader(strategy.experience.current_experience, epoch=self.epoch)
            strategy.dataloader = ([b["x"], b["y"], torch.zeros_like(b["y"])] for b in loader)  # x, y, task 0
            self.epoch += 1

    return OurBatchOrder()
