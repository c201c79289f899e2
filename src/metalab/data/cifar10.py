"""CIFAR-10 for architecture search and retraining, in memory, read by the continual suite's reader.

Two data modules over the offline ``cifar10/cifar10.npz`` (see :mod:`metalab.data.streams` for the file
and its JPEG caveat):

- :class:`Cifar10SearchData`: a fixed random subset of the *training* set cut in two halves, the
  search-train half (network weights) and the search-validation half (architecture weights, fitness).
  The test split is never read, so nothing a search decides has seen it.
- :class:`Cifar10Classification`: a fixed random subset of the training set to train on, and the test
  split (all of it by default) to test on: the retraining of a chosen cell.

``resolution`` 16 averages 2x2 pixel blocks (32x32 -> 16x16): on a 2-core CPU a search at 32x32 costs
4x as much (measured: supernet step 0.95 s at 16x16, ~3 s at 32x32, batch 64, one thread). Both
modules use the same resolution, so a searched cell is retrained on the images it was searched on.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from einops import reduce
from torch.utils.data import DataLoader, Dataset

from metalab.data.resumable import ResumableDataLoader
from metalab.data.streams import SeededBatchSampler, identity_collate, load_arrays
from metalab.errors import require

Tensors = tuple[torch.Tensor, torch.Tensor]
RESOLUTIONS = (32, 16, 8)
TRAIN_SIZE = 50_000


def downsample(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """``[n, c, 32, 32]`` -> ``[n, c, resolution, resolution]`` by averaging square pixel blocks."""
    factor = x.shape[-1] // resolution
    if factor == 1:
        return x
    return reduce(x, "n c (h a) (w b) -> n c h w", "mean", a=factor, b=factor).contiguous()


def cifar10_arrays(resolution: int, data_dir: str | None = None) -> tuple[Tensors, Tensors]:
    """``((x_train, y_train), (x_test, y_test))`` normalised with CIFAR-10's mean/std, at ``resolution``."""
    require(resolution in RESOLUTIONS, "data.resolution", f"one of {RESOLUTIONS}", resolution)
    x_train, y_train, x_test, y_test = load_arrays("cifar10", data_dir)
    return (downsample(x_train, resolution), y_train), (downsample(x_test, resolution), y_test)


def training_subset(examples: int, subset_seed: int) -> torch.Tensor:
    """Indices of ``examples`` training images drawn at random (the file is sorted by class)."""
    order = torch.randperm(TRAIN_SIZE, generator=torch.Generator().manual_seed(subset_seed))
    return order[:examples]


def search_split(
    search_examples: int, subset_seed: int, resolution: int, data_dir: str | None = None
) -> tuple[Tensors, Tensors]:
    """The search halves ``((x, y) train, (x, y) validation)``, ``search_examples // 2`` images each."""
    require(2 <= search_examples <= TRAIN_SIZE, "data.search_examples", f"in [2, {TRAIN_SIZE}]", search_examples)
    (x, y), _ = cifar10_arrays(resolution, data_dir)
    picked = training_subset(search_examples, subset_seed)
    half = search_examples // 2
    train, valid = picked[:half], picked[half : 2 * half]
    return (x[train], y[train]), (x[valid], y[valid])


class PairDataset(Dataset):
    """Batches ``{"x", "y", "x_val", "y_val"}`` from index pairs (a train index, a validation index)."""

    def __init__(self, train: Tensors, valid: Tensors) -> None:
        self.train, self.valid = train, valid

    def __len__(self) -> int:
        return len(self.train[1])

    def __getitems__(self, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        first = torch.as_tensor([p[0] for p in pairs], dtype=torch.long)
        second = torch.as_tensor([p[1] for p in pairs], dtype=torch.long)
        return {
            "x": self.train[0][first],
            "y": self.train[1][first],
            "x_val": self.valid[0][second],
            "y_val": self.valid[1][second],
        }


class PairedBatchSampler:
    """Two seeded shuffles in lock step: a search-train batch and a search-validation batch per step.

    Resumable (``skip_next``) because both samplers are pure functions of (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int) -> None:
        self.train = SeededBatchSampler(n, batch_size, True, seed, epoch, drop_last=True)
        self.valid = SeededBatchSampler(n, batch_size, True, seed + 7_777, epoch, drop_last=True)

    def skip_next(self, batches: int) -> None:
        self.train.skip_next(batches)
        self.valid.skip_next(batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for first, second in zip(self.train, self.valid):
            yield list(zip(first, second))

    def __len__(self) -> int:
        return len(self.train)


class Cifar10SearchData(L.LightningDataModule):
    """The search halves of a training-set subset (see the module docstring); one epoch is one pass over
    the search-train half, each step paired with a search-validation batch. Set the trainer's
    ``reload_dataloaders_every_n_epochs: 1`` so each epoch draws a new order."""

    def __init__(
        self,
        search_examples: int = 6000,
        batch_size: int = 64,
        resolution: int = 16,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        require(batch_size >= 1, "data.batch_size", ">= 1", batch_size)
        require(
            batch_size <= search_examples // 2,
            "data.batch_size",
            f"<= half of data.search_examples ({search_examples // 2})",
            batch_size,
        )
        self.search_examples, self.batch_size, self.resolution = search_examples, batch_size, resolution
        self.subset_seed, self.seed, self.data_dir = subset_seed, seed, data_dir
        self.halves: tuple[Tensors, Tensors] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.halves is None:
            self.halves = search_split(self.search_examples, self.subset_seed, self.resolution, self.data_dir)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        train, valid = self.halves
        epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        sampler = PairedBatchSampler(len(train[1]), self.batch_size, self.seed, epoch)
        return ResumableDataLoader(PairDataset(train, valid), batch_sampler=sampler, collate_fn=identity_collate)


class TensorBatches(Dataset):
    """``{"x", "y", "index"}`` batches by whole-batch indexing of in-memory tensors; ``index`` (positions in
    the set) lets a learner keep per-image values across epochs (a teacher's logits, metalab.learners.distill)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.x[index], "y": self.y[index], "index": index}


class Cifar10Classification(L.LightningDataModule):
    """Train on ``train_examples`` random training images (``null``: all 50,000), test on the test split
    (``test_examples`` of it, ``null``: all 10,000). Used to retrain a chosen cell."""

    def __init__(
        self,
        train_examples: int | None = 10_000,
        test_examples: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 500,
        resolution: int = 16,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        require(
            train_examples is None or 1 <= train_examples <= TRAIN_SIZE,
            "data.train_examples",
            f"null or in [1, {TRAIN_SIZE}]",
            train_examples,
        )
        require(
            test_examples is None or 1 <= test_examples <= 10_000,
            "data.test_examples",
            "null or in [1, 10000]",
            test_examples,
        )
        require(batch_size >= 1, "data.batch_size", ">= 1", batch_size)
        self.train_examples, self.test_examples = train_examples, test_examples
        self.batch_size, self.eval_batch_size, self.resolution = batch_size, eval_batch_size, resolution
        self.subset_seed, self.seed, self.data_dir = subset_seed, seed, data_dir
        self.train_set: TensorBatches | None = None
        self.test_set: TensorBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        (x, y), (x_test, y_test) = cifar10_arrays(self.resolution, self.data_dir)
        picked = training_subset(self.train_examples or TRAIN_SIZE, self.subset_seed)
        self.train_set = TensorBatches(x[picked], y[picked])
        keep = slice(0, self.test_examples)  # the test split is stored class by class: take a random subset
        order = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(self.subset_seed + 1))[keep]
        self.test_set = TensorBatches(x_test[order], y_test[order])

    def train_dataloader(self) -> DataLoader:
        self.setup()
        epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        sampler = SeededBatchSampler(len(self.train_set), self.batch_size, True, self.seed, epoch)
        return ResumableDataLoader(self.train_set, batch_sampler=sampler, collate_fn=identity_collate)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        sampler = SeededBatchSampler(len(self.test_set), self.eval_batch_size, False, 0, 0)
        return DataLoader(self.test_set, batch_sampler=sampler, collate_fn=identity_collate)


def batches(data: Tensors, batch_size: int, generator: torch.Generator) -> Iterator[Tensors]:
    """Endless shuffled mini-batches of in-memory ``(x, y)`` (the short-training fitness loop)."""
    x, y = data
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]
