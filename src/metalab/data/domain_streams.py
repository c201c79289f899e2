"""Domain-incremental streams: every task has the same classes and its own input distribution.

Permuted MNIST (Goodfellow et al. 2013, Kirkpatrick et al. 2017): task ``t`` shows the digits of MNIST
with their pixels moved by a fixed permutation ``pi_t``. Every task has the same 10 classes, one 10-way
head serves them all, and at test time the task is not given: each task's test set is scored by the
argmax over the 10 outputs (domain-incremental learning, "domain-IL", in van de Ven, Tuytelaars and
Tolias 2022). The learner evaluates every task after each task, as for the class splits, so the
accuracy matrix, forgetting, BWT and FWT mean the same here.

What makes a task's domain is a config object, ``data.transform`` (instantiated from its ``_target_``):
any callable ``transform(x [n, c, h, w], task) -> x'`` (the :class:`TaskTransform` contract). So another
domain-incremental benchmark (rotations, :class:`Rotation`; noise; colour shifts) is a config file,
not new stream code. The transform is applied once, when the stream is set up, to the whole (or
subsampled) data set of each task; batches are then one indexing op, as in the class splits.

Memory: each task holds its own transformed copy; all of MNIST for 10 tasks is about 2.2 GB of float32,
so CPU budgets use ``train_examples_per_task`` (a fixed random subset per task, as GEM's 1,000).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from metalab.data.streams import DATASETS, TaskSplit, TaskStream, subset_indices
from metalab.errors import ConfigError, require


@runtime_checkable
class TaskTransform(Protocol):
    """The input transform of each task: ``[n, c, h, w] -> [n, c, h, w]``, deterministic given ``task``."""

    def __call__(self, x: torch.Tensor, task: int) -> torch.Tensor: ...


class PixelPermutation:
    """Task ``t`` moves every image's pixels by its own fixed permutation of the ``h * w`` positions.

    Permutations are drawn in task order from ``numpy.random.RandomState(seed).permutation(h * w)``: the
    generator and the draw of Avalanche's ``PermutedMNIST(seed=...)``, so with the same seed both streams
    hold the same images (the side-by-side benchmark checks it). ``first_unpermuted``: task 0 shows the
    original images and task ``t`` the ``t``-th draw (an option in van de Ven's code too); by default every task
    is permuted, task ``t`` by the ``(t + 1)``-th draw (as Avalanche and GEM).
    """

    def __init__(self, seed: int = 0, first_unpermuted: bool = False) -> None:
        self.seed, self.first_unpermuted = seed, first_unpermuted
        self._drawn: dict[int, list[torch.Tensor]] = {}

    def permutation(self, task: int, n_pixels: int) -> torch.Tensor:
        """The positions ``[h * w]`` (long): output pixel ``i`` is input pixel ``permutation[i]``."""
        require(task >= 0, "task", ">= 0", task)
        if self.first_unpermuted and task == 0:
            return torch.arange(n_pixels)
        draw = task - 1 if self.first_unpermuted else task
        drawn = self._drawn.get(n_pixels, [])
        if len(drawn) <= draw:  # draw again from the start: draw k depends on the k draws before it
            rng = np.random.RandomState(self.seed)
            drawn = self._drawn[n_pixels] = [
                torch.from_numpy(rng.permutation(n_pixels)).long() for _ in range(draw + 1)
            ]
        return drawn[draw]

    def __call__(self, x: torch.Tensor, task: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        flat = rearrange(x, "n c h w -> n c (h w)")
        moved = flat.index_select(-1, self.permutation(task, h * w))
        return rearrange(moved, "n c (h w) -> n c h w", h=h, w=w)


class Rotation:
    """Task ``t`` rotates every image by ``t * step_degrees`` about its centre (Rotated MNIST style).

    Bilinear resampling with zero fill; a multiple of 90 degrees is an exact pixel rotation (tested
    against ``torch.rot90``).
    """

    def __init__(self, step_degrees: float = 15.0) -> None:
        require(math.isfinite(step_degrees), "data.transform.step_degrees", "a finite number", step_degrees)
        self.step_degrees = step_degrees

    def __call__(self, x: torch.Tensor, task: int) -> torch.Tensor:
        angle = math.radians(task * self.step_degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        # Rounded so that multiples of 90 degrees sample pixel centres exactly.
        cos, sin = round(cos, 12), round(sin, 12)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DomainIncrementalStream(TaskStream):
    """``n_tasks`` tasks over one labelled data set, task ``t`` seen through ``transform(x, t)``.

    Every task has all classes of the data set (``n_classes`` = ``classes_per_task`` = 10) and the whole
    training set, or ``train_examples_per_task`` examples of it drawn per task with ``subset_seed``
    (test: ``test_examples_per_task`` with ``subset_seed + 1``). The scenario is domain-IL only: methods
    that need the task id at test time (task-specific heads, progressive networks) are refused by the
    learner.
    """

    scenarios = ("domain_il",)

    def __init__(
        self,
        dataset: str = "mnist",
        n_tasks: int = 10,
        transform: TaskTransform | None = None,
        epochs_per_task: int = 1,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        train_examples_per_task: int | None = None,
        test_examples_per_task: int | None = None,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        require(dataset in DATASETS, "data.dataset", f"one of {', '.join(DATASETS)}", dataset)
        if not isinstance(transform, TaskTransform):
            raise ConfigError(
                f"data.transform={transform!r} is not allowed: data.transform must be a per-task input "
                "transform given by its _target_, e.g. metalab.data.domain_streams.PixelPermutation"
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
        self.dataset, self.transform = dataset, transform

    @property
    def n_classes(self) -> int:
        return 10

    @property
    def classes_per_task(self) -> int:
        return self.n_classes

    def setup(self, stage: str | None = None) -> None:
        if self.train_tasks:
            return
        x_tr, y_tr, x_te, y_te = self._arrays(self.dataset)
        self.train_tasks = [
            self._task(x_tr, y_tr, t, self.train_examples_per_task, self.subset_seed) for t in range(self.n_tasks)
        ]
        self.test_tasks = [
            self._task(x_te, y_te, t, self.test_examples_per_task, self.subset_seed + 1) for t in range(self.n_tasks)
        ]

    def _task(self, x: torch.Tensor, y: torch.Tensor, task: int, per_task: int | None, seed: int) -> TaskSplit:
        if per_task is not None:
            keep = subset_indices(len(y), per_task, seed, task)
            x, y = x[keep], y[keep]
        moved = self.transform(x, task)
        if not isinstance(moved, torch.Tensor) or moved.shape != x.shape:
            got = tuple(moved.shape) if isinstance(moved, torch.Tensor) else type(moved).__name__
            raise ConfigError(
                f"data.transform must map images [n, c, h, w] to the same shape; "
                f"{type(self.transform).__name__} gave {got} for {tuple(x.shape)} on task {task}"
            )
        return TaskSplit(x=moved.contiguous(), y=y, task=task)
