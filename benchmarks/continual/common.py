"""Shared by the continual benchmarks: compose our experiment configs, time epochs, evaluate a model.

Every benchmark builds its stream, backbone and optimiser from the same Hydra experiment files the
training runs use (``conf/experiment/split_*/``), so "the same work" is the same config, not a copy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from metalab.data.streams import TaskStream, subset_indices
from metalab.learners.continual.loop import PlainLearner, evaluate_all_tasks
from metalab.metrics.continual import summarise

REPO = Path(__file__).resolve().parents[2]
RUNS = Path(os.environ.get("METALAB_CONTINUAL_RUNS", REPO / "logs" / "continual"))  # git-ignored


def experiment_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """The composed config of ``+experiment=<name>`` (e.g. ``split_mnist/ewc``) with ``overrides``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        # paths.output_dir normally comes from Hydra's run dir, which compose() does not create.
        return compose(
            config_name="train",
            overrides=[f"+experiment={name}", f"paths.output_dir={RUNS / 'scratch'}", *(overrides or [])],
        )


class EpochTimer(L.Callback):
    """Wall time and this process's CPU time of each training epoch (batches, replay and penalties; not the
    task-end Fisher or evaluation). On a core shared with other jobs the CPU time is the steadier figure:
    wall time also counts the time slices other processes got."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.batches: list[int] = []
        self._start = self._cpu_start = 0.0
        self._n = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._cpu_start, self._n = time.perf_counter(), time.process_time(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._n += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)
        self.batches.append(self._n)


def evaluate_row(model: torch.nn.Module, stream: TaskStream, channels_last: bool = False) -> dict[str, list[float]]:
    """Accuracy (%) of ``model`` on every task of ``stream`` in each of its scenarios (ours and peers alike),
    by the same evaluation our learner runs (:func:`metalab.learners.continual.loop.evaluate_all_tasks`)."""
    prepare = PlainLearner(model, None, [], channels_last=channels_last).prepare
    scores = evaluate_all_tasks(model, stream, prepare)
    return {scenario: [score.accuracy(scenario) for score in scores] for scenario in stream.scenarios}


def summary_from_rows(rows: list[dict[str, list[float]]], initial: dict[str, list[float]] | None) -> dict[str, Any]:
    """``{scenario: {acc, forgetting, bwt, fwt, R}}`` from the rows after each task."""
    result: dict[str, Any] = {}
    for scenario in rows[0]:
        r = torch.tensor([row[scenario] for row in rows], dtype=torch.float64)
        b = torch.tensor(initial[scenario], dtype=torch.float64) if initial else None
        result[scenario] = {**summarise(r, b), "R": r.tolist()}
    return result


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def avalanche_benchmark(stream: TaskStream):
    """Avalanche's view of our stream: one experience per task, over the very tensors ours trains on."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    stream.setup("fit")

    def dataset(part):
        return _make_taskaware_tensor_classification_dataset(part.x, part.y, task_labels=0, targets=part.y)

    return benchmark_from_datasets(
        train=[dataset(p) for p in stream.train_tasks], test=[dataset(p) for p in stream.test_tasks]
    )


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
        return LwF(alpha=float(method["alpha"]) * t**2, temperature=t, **common)
    raise ValueError(f"no Avalanche counterpart for {name!r}")


def our_batch_order(stream: TaskStream):
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


def avalanche_permuted_mnist(stream: TaskStream, seed: int, mnist_root: Path):
    """Avalanche's own ``PermutedMNIST(n_tasks, seed=seed)`` generator, cut to our stream's per-task subsets.

    Its permutations come from the same numpy draws as ours (``metalab.data.domain_streams.PixelPermutation``)
    and its images are MNIST in [0, 1] (its ``TensorMNIST``; the default normalising transform is turned off
    so both sides see the same pixels). Our subsets are found in its experiences by
    :func:`positions_by_class`. Every stored image of every task is checked equal to ours, so an
    accuracy gap cannot come from the data. MNIST is read from ``mnist_root`` in torchvision's raw format,
    written there once from our offline copy (nothing is downloaded).
    """
    from avalanche.benchmarks.classic import PermutedMNIST
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    if stream.transform.first_unpermuted:
        raise ValueError("Avalanche's PermutedMNIST permutes every task: set data.transform.first_unpermuted=false")
    stream.setup("fit")
    write_torchvision_mnist(mnist_root)
    theirs = PermutedMNIST(
        stream.n_tasks, seed=seed, train_transform=None, eval_transform=None, dataset_root=str(mnist_root)
    )

    def cut(experiences, ours_tasks, labels, per_task, subset_seed):
        parts = []
        for task, (experience, ours) in enumerate(zip(experiences, ours_tasks)):
            where = positions_by_class(torch.as_tensor(list(experience.dataset.targets)), labels)
            keep = subset_indices(len(labels), per_task, subset_seed, task) if per_task else torch.arange(len(labels))
            data = experience.dataset.subset(where[keep].tolist())
            x = torch.stack([data[i][0] for i in range(len(data))])
            y = torch.tensor([int(data[i][1]) for i in range(len(data))])
            if not (torch.equal(x, ours.x) and torch.equal(y, ours.y)):
                raise AssertionError(f"Avalanche's PermutedMNIST task {task} differs from our stream's")
            parts.append(data)
        return parts

    _, y_train, _, y_test = stream._arrays(stream.dataset)
    train = cut(theirs.train_stream, stream.train_tasks, y_train, stream.train_examples_per_task, stream.subset_seed)
    test = cut(theirs.test_stream, stream.test_tasks, y_test, stream.test_examples_per_task, stream.subset_seed + 1)
    return benchmark_from_datasets(train=train, test=test)


def positions_by_class(held: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Where each example of a data set (``labels [n]``, original order) sits in a scenario's copy of it
    whose labels are ``held [n]``: Avalanche's experiences group the examples by class, in a class order of
    their own (it differs between PermutedMNIST's experiences), keeping the original order within a class.
    The caller checks the images, so a wrong guess cannot pass unnoticed."""
    where = torch.empty_like(labels)
    for label in torch.unique_consecutive(held).tolist():
        members = (labels == label).nonzero().flatten()
        start = int((held == label).nonzero()[0])
        where[members] = start + torch.arange(len(members))
    if not torch.equal(held[where], labels):
        raise AssertionError("the scenario does not hold the data set grouped by class in original order")
    return where


def write_torchvision_mnist(root: Path) -> None:
    """MNIST in torchvision's raw idx format under ``root/MNIST/raw`` (from our offline .npz), once."""
    import numpy as np

    from metalab.data.files import locate
    from metalab.data.streams import MNIST_FILE

    raw = root / "MNIST" / "raw"
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    if all((raw / n).is_file() for n in names.values()):
        return
    raw.mkdir(parents=True, exist_ok=True)
    with np.load(locate(MNIST_FILE)) as z:
        for key, name in names.items():
            array = z[key].astype(np.uint8)
            magic = 2051 if array.ndim == 3 else 2049  # idx3 images / idx1 labels, big-endian sizes
            header = np.array([magic, *array.shape], dtype=">i4").tobytes()
            (raw / name).write_bytes(header + array.tobytes())
