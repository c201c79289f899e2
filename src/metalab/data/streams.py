"""Continual task streams: Split CIFAR-10 and Split MNIST (5 tasks x 2 classes) held in memory.

:class:`TaskStream` is what every stream shares (tasks in memory, seeded loaders, the current task);
the class splits below are one kind of stream, the domain-incremental streams of
:mod:`metalab.data.domain_streams` (Permuted MNIST) another.

A stream cuts a labelled data set into ``n_tasks`` tasks of ``classes_per_task`` classes each, in a
class order fixed by ``class_order_seed`` (``null``: the natural order 0..9, as in Mammoth). Labels are
remapped to the position of their class in that order, so task ``t`` always owns the labels
``t*classes_per_task .. (t+1)*classes_per_task - 1`` and a single head of ``n_tasks*classes_per_task``
outputs serves both scenarios:

- class-incremental (class-IL): the prediction is the argmax over every output;
- task-incremental (task-IL): the task id of each example is given and the logits of the other tasks'
  classes are masked out before the argmax (:func:`task_il_mask`).

All images are tensors in memory (CIFAR-10 train is 600 MB as float32, MNIST 190 MB), so a batch is one
indexing op, not 32 ``__getitem__`` calls and a collate; this keeps the loop at the plain-PyTorch floor.

The data module serves the *current* task's training loader. With one ``Trainer.fit`` over
``n_tasks * epochs_per_task`` epochs and ``reload_dataloaders_every_n_epochs=1`` the current task is
``trainer.current_epoch // epochs_per_task``: :meth:`TaskStream.trainer_arguments` names both Trainer
arguments and :func:`metalab.run.build_run` passes them to the Trainer it builds.

CIFAR-10 caveat: the offline copy (shared/data/cifar10) was built from JPEG-compressed images (quality
~75), so pixels are close to, but not bit-identical with, the official arrays; its channel std is about
1% lower. We normalise with the official CIFAR-10 mean/std, as Mammoth does, and accuracies should be
close to, not exactly, published figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from metalab.data.files import locate
from metalab.data.resumable import ResumableDataLoader
from metalab.errors import DataError, require

Batch = dict[str, torch.Tensor]

CIFAR10_FILE = "cifar10/cifar10.npz"
MNIST_FILE = "mnist/mnist.npz"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # official CIFAR-10 train statistics (Mammoth's normalisation)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DATASETS = ("cifar10", "mnist")


@dataclass
class TaskSplit:
    """The examples of one task in one split: ``x [n, c, h, w]`` float32, ``y [n]`` remapped labels."""

    x: torch.Tensor
    y: torch.Tensor
    task: int

    def __len__(self) -> int:
        return int(self.y.numel())


class TaskDataset(Dataset):
    """One or more :class:`TaskSplit` served as dict batches ``{"x", "y", "task"}`` by whole-batch indexing."""

    def __init__(self, parts: list[TaskSplit]) -> None:
        self.x = torch.cat([p.x for p in parts])
        self.y = torch.cat([p.y for p in parts])
        self.task = torch.cat([torch.full((len(p),), p.task, dtype=torch.long) for p in parts])

    def __len__(self) -> int:
        return int(self.y.numel())

    def __getitem__(self, index: int) -> Batch:
        return {"x": self.x[index], "y": self.y[index], "task": self.task[index]}

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.x[idx], "y": self.y[idx], "task": self.task[idx]}


def identity_collate(batch: Batch) -> Batch:
    return batch


class SeededBatchSampler(Sampler[list[int]]):
    """Shuffled (or ordered) mini-batches of indices; the permutation comes from ``seed`` and the epoch.

    Its own generator makes the batch order independent of the global RNG (which methods such as
    sampled-label Fisher consume), so the same seed gives the same batches whatever the method.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, epoch: int, drop_last: bool = False) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self._skip = seed, epoch, 0

    def skip_next(self, batches: int) -> None:
        """Start the next pass ``batches`` batches in (a run resumed mid-epoch, ``metalab.data.resumable``)."""
        self._skip = batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        for start in range(skip * self.batch_size, self.n, self.batch_size):
            chunk = order[start : start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield chunk.tolist()

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)


def task_il_mask(task_ids: torch.Tensor | None, n_classes: int, classes_per_task: int) -> torch.Tensor:
    """Boolean ``[n, n_classes]``: True on the classes of each example's own task.

    Raises :class:`DataError` when ``task_ids`` is missing: task-IL evaluation needs them.
    """
    if task_ids is None:
        raise DataError(
            "task-IL evaluation needs task ids, but the batch has no 'task' field; "
            "serve batches as {'x', 'y', 'task'} (metalab.data.streams.TaskDataset) or evaluate class-IL only"
        )
    owner = torch.arange(n_classes, device=task_ids.device) // classes_per_task  # [classes]
    return owner.unsqueeze(0) == task_ids.unsqueeze(1)


def split_by_task(
    x: torch.Tensor, labels: torch.Tensor, class_order: list[int], classes_per_task: int, split: str
) -> list[TaskSplit]:
    """Cut ``x [n, ...]``, ``labels [n]`` (original classes) into tasks following ``class_order``.

    Labels become positions in ``class_order``. A task without any example is a :class:`DataError`:
    training on it would silently skip a task and shift every later row of the accuracy matrix.
    """
    position = torch.full((int(max(class_order)) + 1,), -1, dtype=torch.long)
    position[torch.tensor(class_order)] = torch.arange(len(class_order))
    known = labels < len(position)
    remapped = torch.where(known, position[labels.clamp(max=len(position) - 1)], torch.tensor(-1))
    tasks = []
    for t in range(len(class_order) // classes_per_task):
        lo, hi = t * classes_per_task, (t + 1) * classes_per_task
        rows = (remapped >= lo) & (remapped < hi)
        if not bool(rows.any()):
            classes = class_order[lo:hi]
            raise DataError(
                f"task {t} is empty in the {split} split: no examples of classes {classes}; "
                "check the data file or data.class_order_seed / data.classes_per_task"
            )
        tasks.append(TaskSplit(x=x[rows].contiguous(), y=remapped[rows], task=t))
    return tasks


def make_class_order(n_classes: int, class_order_seed: int | None) -> list[int]:
    """``0..n-1`` permuted by ``class_order_seed`` (numpy PCG64); ``None`` keeps the natural order."""
    if class_order_seed is None:
        return list(range(n_classes))
    return [int(c) for c in np.random.default_rng(class_order_seed).permutation(n_classes)]


@lru_cache(maxsize=2)
def load_arrays(dataset: str, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images ``[n, c, h, w]`` float32 normalised, labels long."""
    if dataset == "cifar10":
        with np.load(locate(CIFAR10_FILE, data_dir)) as z:
            arrays = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

        def images(a: np.ndarray) -> torch.Tensor:  # "n h w c" uint8 -> "n c h w" float
            return (torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255) - mean) / std
    else:
        with np.load(locate(MNIST_FILE, data_dir)) as z:
            arrays = z["x_train"], z["y_train"], z["x_test"], z["y_test"]

        def images(a: np.ndarray) -> torch.Tensor:  # "n h w" uint8 -> "n 1 h w" in [0, 1] (Mammoth: no normalisation)
            return torch.from_numpy(a).unsqueeze(1).float().div_(255)

    x_tr, y_tr, x_te, y_te = arrays
    return (
        images(x_tr).contiguous(),
        torch.from_numpy(y_tr.astype(np.int64)),
        images(x_te).contiguous(),
        torch.from_numpy(y_te.astype(np.int64)),
    )


def _subsample(tasks: list[TaskSplit], per_task: int | None, seed: int) -> list[TaskSplit]:
    """Keep ``per_task`` random examples of each task (a fixed subset for a CPU budget)."""
    if per_task is None:
        return tasks
    out = []
    for t in tasks:
        keep = subset_indices(len(t), per_task, seed, t.task)
        out.append(TaskSplit(t.x[keep].contiguous(), t.y[keep], t.task))
    return out


def _hold_out(tasks: list[TaskSplit], per_task: int, seed: int) -> tuple[list[TaskSplit], list[TaskSplit]]:
    """Split each task's training examples into (kept for training, ``per_task`` held out for validation)."""
    kept, held = [], []
    for t in tasks:
        require(
            per_task < len(t),
            "data.validation_examples_per_task",
            f"below the {len(t)} training examples of task {t.task}",
            per_task,
        )
        order = torch.randperm(len(t), generator=torch.Generator().manual_seed(seed * 1000 + t.task))
        out, keep = order[:per_task].sort().values, order[per_task:].sort().values
        kept.append(TaskSplit(t.x[keep].contiguous(), t.y[keep], t.task))
        held.append(TaskSplit(t.x[out].contiguous(), t.y[out], t.task))
    return kept, held


def subset_indices(n: int, per_task: int, seed: int, task: int) -> torch.Tensor:
    """The sorted positions (of ``n``) that task ``task`` keeps: ``per_task`` of them, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed * 1000 + task)
    return torch.randperm(n, generator=gen)[:per_task].sort().values


class ChunkedBatchSampler(Sampler[list[int]]):
    """``per_chunk`` consecutive mini-batches of ``batches`` joined into one list of indices.

    Why: on a small model a training step costs a fraction of a millisecond and Lightning's per-batch
    machinery (hooks, callbacks, progress tracking) costs more than that; serving a chunk of mini-batches
    per Lightning batch pays it once per chunk. The learner cuts each chunk back into the very same
    mini-batches (``torch.split`` by the batch size: every mini-batch is full except possibly the last of
    the pass, which is the last of its chunk), so training is unchanged. Skipping (resume) counts chunks.
    """

    def __init__(self, batches: SeededBatchSampler, per_chunk: int) -> None:
        require(per_chunk >= 1, "learner.batches_per_step", "at least 1", per_chunk)
        self.batches, self.per_chunk = batches, per_chunk

    def skip_next(self, chunks: int) -> None:
        self.batches.skip_next(chunks * self.per_chunk)

    def __iter__(self) -> Iterator[list[int]]:
        chunk: list[int] = []
        joined = 0
        for batch in self.batches:
            chunk += batch
            joined += 1
            if joined == self.per_chunk:
                yield chunk
                chunk, joined = [], 0
        if chunk:
            yield chunk

    def __len__(self) -> int:
        return -(-len(self.batches) // self.per_chunk)


class TaskStream(L.LightningDataModule):
    """A sequence of tasks held in memory: what the continual learner trains on, whatever made the tasks.

    Subclasses fill ``train_tasks`` and ``test_tasks`` (one :class:`TaskSplit` per task) in ``setup``
    and say which evaluation ``scenarios`` the stream supports and how many outputs (``n_classes``) the
    single head has; everything else (loaders with seeded batch order, the current task, joint training
    through ``cumulative``) is shared. Known scenarios: ``class_il``, ``task_il`` (class splits) and
    ``domain_il`` (every task has the same classes; see :mod:`metalab.data.domain_streams`).
    """

    scenarios: tuple[str, ...] = ()

    def __init__(
        self,
        n_tasks: int,
        epochs_per_task: int = 1,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        train_examples_per_task: int | None = None,
        test_examples_per_task: int | None = None,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        require(n_tasks >= 1, "data.n_tasks", "at least 1", n_tasks)
        require(epochs_per_task >= 1, "data.epochs_per_task", "at least 1", epochs_per_task)
        require(batch_size >= 1, "data.batch_size", "at least 1", batch_size)
        require(eval_batch_size >= 1, "data.eval_batch_size", "at least 1", eval_batch_size)
        for key, value in (
            ("train_examples_per_task", train_examples_per_task),
            ("test_examples_per_task", test_examples_per_task),
        ):
            require(value is None or value >= 1, f"data.{key}", "null (all) or at least 1", value)
        self.n_tasks, self.epochs_per_task = n_tasks, epochs_per_task
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_examples_per_task, self.test_examples_per_task = train_examples_per_task, test_examples_per_task
        self.subset_seed, self.seed, self.data_dir, self.num_workers = subset_seed, seed, data_dir, num_workers
        self.cumulative = False
        self.batches_per_step = 1  # mini-batches per Lightning training batch (set by the learner)
        self.train_tasks: list[TaskSplit] = []
        self.test_tasks: list[TaskSplit] = []

    @classmethod
    def from_tensors(
        cls, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, **kwargs: Any
    ) -> TaskStream:
        """A stream over given tensors (tests and notebooks): ``x [n, c, h, w]``, ``y [n]`` in 0..9."""
        module = cls(**kwargs)
        module._tensors = (x_train, y_train, x_test, y_test)
        return module

    def _arrays(self, dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, "_tensors", None) or load_arrays(dataset, self.data_dir)

    @property
    def n_classes(self) -> int:
        """Outputs of the single head."""
        raise NotImplementedError

    @property
    def classes_per_task(self) -> int:
        raise NotImplementedError

    @property
    def class_order(self) -> list[int]:
        """Original class of each label (for the run record)."""
        return list(range(self.n_classes))

    def trainer_arguments(self) -> dict[str, int]:
        """The Trainer arguments this stream decides: one fit covers every task's epochs, and the training
        loader is rebuilt each epoch so that it serves the current task (``Trainer(**stream.trainer_arguments())``;
        :func:`metalab.run.build_run` does it for a configured run)."""
        return {"max_epochs": self.n_tasks * self.epochs_per_task, "reload_dataloaders_every_n_epochs": 1}

    # -- what the learner asks for -----------------------------------------------------------------------
    def current_task(self) -> int:
        epoch = self.trainer.current_epoch if self._has_trainer() else 0
        return min(epoch // self.epochs_per_task, self.n_tasks - 1)

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def task_train_dataset(self, task: int) -> TaskDataset:
        """Training examples of ``task`` (of tasks ``0..task`` when ``cumulative``)."""
        parts = self.train_tasks[: task + 1] if self.cumulative else [self.train_tasks[task]]
        return TaskDataset(parts)

    def task_train_loader(
        self, task: int, shuffle: bool = True, batch_size: int | None = None, epoch: int | None = None
    ) -> DataLoader:
        """Batches of ``task``; their order is fixed by the seed and ``epoch`` (the stream-wide epoch index,
        by default the trainer's), so another training loop can replay exactly the batches ours saw."""
        data = self.task_train_dataset(task)
        if epoch is None:
            epoch = self.trainer.current_epoch if self._has_trainer() else 0
        sampler = SeededBatchSampler(len(data), batch_size or self.batch_size, shuffle, self.seed, epoch)
        return ResumableDataLoader(
            data, batch_sampler=sampler, collate_fn=identity_collate, num_workers=self.num_workers
        )

    def task_test_loader(self, task: int) -> DataLoader:
        data = TaskDataset([self.test_tasks[task]])
        sampler = SeededBatchSampler(len(data), self.eval_batch_size, False, 0, 0)
        return DataLoader(data, batch_sampler=sampler, collate_fn=identity_collate, num_workers=self.num_workers)

    def train_examples(self) -> int:
        """Training examples over the whole stream (what a replay buffer could ever hold)."""
        return sum(len(t) for t in self.train_tasks)

    # -- Lightning hooks -------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """The current task's mini-batches, ``batches_per_step`` of them joined per Lightning batch."""
        loader = self.task_train_loader(self.current_task())
        if self.batches_per_step == 1:
            return loader
        chunks = ChunkedBatchSampler(loader.batch_sampler, self.batches_per_step)
        return ResumableDataLoader(
            loader.dataset, batch_sampler=chunks, collate_fn=identity_collate, num_workers=self.num_workers
        )

    def test_dataloader(self) -> list[DataLoader]:
        return [self.task_test_loader(t) for t in range(self.n_tasks)]


class SplitStreamDataModule(TaskStream):
    """Split CIFAR-10 / Split MNIST as a sequence of tasks (see the module docstring).

    ``train_examples_per_task`` / ``test_examples_per_task``: a fixed random subset of each task (same for
    every seed and method, drawn with ``subset_seed``), for CPU budgets; ``null`` keeps all.
    ``cumulative``: the training loader of task t serves tasks 0..t together (joint training, the
    ceiling); the continual learner sets it from its method.
    ``eval_split``: ``test`` evaluates on the test set; ``validation`` holds out ``validation_examples_per_task``
    random training examples of each task (drawn with ``subset_seed``, never trained on) and evaluates on
    them instead, under the same metric names, so a hyperparameter sweep selects without seeing the test set.
    """

    scenarios = ("class_il", "task_il")

    def __init__(
        self,
        dataset: str = "cifar10",
        n_tasks: int = 5,
        classes_per_task: int = 2,
        class_order_seed: int | None = None,
        epochs_per_task: int = 1,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        train_examples_per_task: int | None = None,
        test_examples_per_task: int | None = None,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
        num_workers: int = 0,
        eval_split: str = "test",
        validation_examples_per_task: int = 1000,
    ) -> None:
        require(eval_split in ("test", "validation"), "data.eval_split", "test or validation", eval_split)
        require(
            validation_examples_per_task >= 1,
            "data.validation_examples_per_task",
            "at least 1",
            validation_examples_per_task,
        )
        require(dataset in DATASETS, "data.dataset", f"one of {', '.join(DATASETS)}", dataset)
        require(classes_per_task >= 1, "data.classes_per_task", "at least 1", classes_per_task)
        require(
            n_tasks * classes_per_task <= 10,
            "data.n_tasks * data.classes_per_task",
            f"at most the 10 classes of {dataset}",
            n_tasks * classes_per_task,
        )
        super().__init__(
            n_tasks,
            epochs_per_task,
            batch_size,
            eval_batch_size,
            train_examples_per_task,
            test_examples_per_task,
            subset_seed,
            seed,
            data_dir,
            num_workers,
        )
        self.dataset, self._classes_per_task = dataset, classes_per_task
        self.eval_split, self.validation_examples_per_task = eval_split, validation_examples_per_task
        self._class_order = make_class_order(10, class_order_seed)[: n_tasks * classes_per_task]

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self._classes_per_task

    @property
    def classes_per_task(self) -> int:
        return self._classes_per_task

    @property
    def class_order(self) -> list[int]:
        return self._class_order

    def setup(self, stage: str | None = None) -> None:
        if self.train_tasks:
            return
        x_tr, y_tr, x_te, y_te = self._arrays(self.dataset)
        train = split_by_task(x_tr, y_tr, self.class_order, self.classes_per_task, "train")
        test = split_by_task(x_te, y_te, self.class_order, self.classes_per_task, "test")
        if self.eval_split == "validation":
            train, test = _hold_out(train, self.validation_examples_per_task, self.subset_seed + 2)
        self.train_tasks = _subsample(train, self.train_examples_per_task, self.subset_seed)
        self.test_tasks = _subsample(test, self.test_examples_per_task, self.subset_seed + 1)
