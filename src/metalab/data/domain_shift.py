"""Source and target domains for domain adaptation: Rotated MNIST with held-out rotations (issue 34).

A *domain* is the digits of MNIST turned by one angle (the Rotated MNIST of Ghifary et al. 2015, here with
the angles in config). The **source** domains (``source_angles``, e.g. 0/15/30/45 degrees) each get their own
disjoint ``source_examples_per_domain`` training images, labelled; training sees only them. Each **target**
domain (``target_angles``, held out: none may be a source angle) gets, from further disjoint training images,
a pool of ``target_examples_per_class`` images per class (its labelled examples, of which an episode reveals
``k`` per class, and, without labels, its unlabelled data) and ``target_test_examples`` test images (MNIST's
test set turned by its angle), on which every method is scored.

Test episodes (one named test loader per target and k, ``r<angle>_k<k>``, ``episodes`` each) carry everything
an adaptation may use, with a leading task axis of 1 as the episodic learners expect:

- ``support`` / ``support_labels``: ``k`` labelled target images per class (class-major), drawn per episode;
- ``query`` / ``query_labels``: the target's test images (the same for every episode and method);
- ``unlabelled``: the target's whole pool without its labels (unsupervised alignment, domain distances);
- ``source`` / ``source_labels``: a labelled sample of ``source_sample`` source images (for alignment);
- ``seed``: the episode's own seed, so an adaptation's randomness does not depend on which method ran before.

The draws depend only on ``seed``, the target, ``k`` and the episode's index: every method of one seed
meets the same support sets (comparisons between methods are paired). Training serves either mini-batches
of labelled source images (``train: batches``, a supervised source model) or episodes whose tasks are the
source domains (``train: episodes``: 10-way, ``train_shot`` + ``train_query`` images per class of one source
domain per task; MAML and Reptile meta-learn their initialisation on them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from metalab.data.domain_streams import Rotation
from metalab.data.streams import DATASETS, load_arrays
from metalab.errors import ConfigError, require

Batch = dict[str, torch.Tensor]
TRAIN_MODES = ("batches", "episodes")
N_CLASSES = 10


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """``x [n, c, h, w]`` turned by ``degrees`` about the centre (bilinear, zero fill; :class:`Rotation`)."""
    return Rotation(step_degrees=degrees)(x, 1)


def test_name(angle: float, k: int) -> str:
    """``r60_k5``: the test loader (and metric prefix) of target angle 60 with 5 labelled images per class."""
    return f"r{angle:g}_k{k}"


def _seed(*parts: float) -> int:
    """A stable 62-bit seed from numbers (angles may be negative or fractional)."""
    value = 1469598103934665603
    for part in parts:
        value = (value ^ int(round(float(part) * 1000)) & 0xFFFFFFFFFFFF) * 1099511628211 % (1 << 62)
    return value


class RotatedDomains(L.LightningDataModule):
    """Labelled source rotations for training; held-out target rotations, each tested at every ``k``."""

    def __init__(
        self,
        dataset: str = "mnist",
        source_angles: Sequence[float] = (0, 15, 30, 45),
        target_angles: Sequence[float] = (60, 90, 135, 180),
        source_examples_per_domain: int = 2000,
        target_examples_per_class: int = 100,
        target_test_examples: int = 2000,
        shots: Sequence[int] = (1, 5, 10),
        episodes: int = 3,
        source_sample: int = 1000,
        train: str = "batches",
        train_batches: int = 1000,
        batch_size: int = 64,
        tasks_per_batch: int = 4,
        train_shot: int = 5,
        train_query: int = 5,
        subset_seed: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        require(dataset in DATASETS, "data.dataset", f"one of {', '.join(DATASETS)}", dataset)
        self.source_angles = self._angles(source_angles, "data.source_angles")
        self.target_angles = self._angles(target_angles, "data.target_angles")
        shared = sorted(set(self.source_angles) & set(self.target_angles))
        require(not shared, "data.target_angles", f"held out: no source angle (shared: {shared})", self.target_angles)
        for key, value in {
            "data.source_examples_per_domain": source_examples_per_domain,
            "data.target_examples_per_class": target_examples_per_class,
            "data.target_test_examples": target_test_examples,
            "data.episodes": episodes,
            "data.source_sample": source_sample,
            "data.batch_size": batch_size,
            "data.tasks_per_batch": tasks_per_batch,
            "data.train_shot": train_shot,
            "data.train_query": train_query,
        }.items():
            require(isinstance(value, int) and value >= 1, key, "an integer >= 1", value)
        require(
            isinstance(train_batches, int) and train_batches >= 0,
            "data.train_batches",
            "an integer >= 0",
            train_batches,
        )
        require(train in TRAIN_MODES, "data.train", f"one of {', '.join(TRAIN_MODES)}", train)
        self.shots = self._shots(shots, target_examples_per_class)
        self.dataset, self.data_dir = dataset, data_dir
        self.source_examples_per_domain = source_examples_per_domain
        self.target_examples_per_class = target_examples_per_class
        self.target_test_examples, self.episodes, self.source_sample = target_test_examples, episodes, source_sample
        self.train_mode, self.train_batches, self.batch_size = train, train_batches, batch_size
        self.tasks_per_batch, self.train_shot, self.train_query = tasks_per_batch, train_shot, train_query
        self.subset_seed, self.seed = subset_seed, seed
        self.source: list[tuple[torch.Tensor, torch.Tensor]] = []  # per source angle: images, labels
        self.targets: list[dict[str, torch.Tensor]] = []  # per target angle: pool_x, pool_y, test_x, test_y

    @staticmethod
    def _angles(angles: Sequence[float], key: str) -> list[float]:
        values = list(angles) if isinstance(angles, Sequence) and not isinstance(angles, str) else None
        ok = bool(values) and all(isinstance(a, (int, float)) and math.isfinite(a) for a in values)
        require(ok and len(set(values)) == len(values), key, "a non-empty list of distinct finite angles", angles)
        return [float(a) for a in values]

    @staticmethod
    def _shots(shots: Sequence[int], per_class: int) -> list[int]:
        """``k`` values: integers in ``[0, target_examples_per_class]`` (0: no labelled target image)."""
        values = list(shots) if isinstance(shots, Sequence) and not isinstance(shots, str) else None
        if not values or not all(isinstance(k, int) and 0 <= k <= per_class for k in values):
            raise ConfigError(
                f"data.shots={shots!r} is not allowed: each k of data.shots must be an integer in [0, {per_class}], "
                f"at most the labelled examples per class of a target domain (data.target_examples_per_class="
                f"{per_class})"
            )
        return sorted(set(values))

    @property
    def test_names(self) -> list[str]:
        return [test_name(a, k) for a in self.target_angles for k in self.shots]

    def setup(self, stage: str | None = None) -> None:
        """Cut MNIST's training images into disjoint source domains and target pools, and turn every image."""
        if self.source:
            return
        x_tr, y_tr, x_te, y_te = load_arrays(self.dataset, self.data_dir)
        order = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(self.subset_seed))
        n_src = self.source_examples_per_domain
        if n_src * len(self.source_angles) > len(order) // 2:
            raise ConfigError(
                f"data.source_examples_per_domain={n_src} is not allowed: the source domains may take at most "
                f"half of the {len(order)} training images ({len(order) // 2 // len(self.source_angles)} per domain)"
            )
        for i, angle in enumerate(self.source_angles):
            keep = order[i * n_src : (i + 1) * n_src]
            self.source.append((rotate(x_tr[keep], angle).contiguous(), y_tr[keep]))
        pools = self._target_pools(order[n_src * len(self.source_angles) :], y_tr)
        for i, (angle, keep) in enumerate(zip(self.target_angles, pools)):
            test_gen = torch.Generator().manual_seed(self.subset_seed * 1009 + i + 1)
            test_keep = torch.randperm(len(y_te), generator=test_gen)[: min(self.target_test_examples, len(y_te))]
            self.targets.append(
                {
                    "pool_x": rotate(x_tr[keep], angle).contiguous(),
                    "pool_y": y_tr[keep],
                    "test_x": rotate(x_te[test_keep], angle).contiguous(),
                    "test_y": y_te[test_keep],
                }
            )

    def _target_pools(self, rest: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Per target, ``target_examples_per_class`` indices of each class (class-major), disjoint across targets."""
        per_class, n_targets = self.target_examples_per_class, len(self.target_angles)
        by_class = [rest[labels[rest] == c] for c in range(N_CLASSES)]
        fewest = min(len(idx) for idx in by_class)
        if fewest < per_class * n_targets:
            raise ConfigError(
                f"data.target_examples_per_class={per_class} is not allowed: {n_targets} targets need "
                f"{per_class * n_targets} images of each class and the images left after the source domains hold "
                f"{fewest} of the rarest; at most {fewest // n_targets}"
            )
        return [torch.cat([idx[t * per_class : (t + 1) * per_class] for idx in by_class]) for t in range(n_targets)]

    @cached_property
    def _all_source(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([x for x, _ in self.source]), torch.cat([y for _, y in self.source])

    def train_dataloader(self) -> DataLoader:
        if self.train_mode == "batches":
            data: Dataset = SourceBatches(*self._all_source, self.train_batches, self.batch_size, self.seed)
        else:
            data = SourceEpisodes(
                self.source, self.train_batches, self.tasks_per_batch, self.train_shot, self.train_query, self.seed
            )
        return DataLoader(data, batch_size=None, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        loaders = []
        for angle, target in zip(self.target_angles, self.targets):
            for k in self.shots:
                episodes = TargetEpisodes(
                    target, self._all_source, angle, k, self.episodes, self.source_sample, self.seed
                )
                loaders.append(DataLoader(episodes, batch_size=None, shuffle=False))
        return loaders


class SourceBatches(Dataset):
    """``length`` mini-batches ``{"x", "y"}`` of labelled source images, batch ``i`` drawn with its own seed."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, length: int, batch_size: int, seed: int) -> None:
        self.x, self.y, self.length, self.batch_size, self.seed = x, y, length, batch_size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        gen = torch.Generator().manual_seed(_seed(self.seed, 1, index))
        rows = torch.randint(len(self.y), (self.batch_size,), generator=gen)
        return {"x": self.x[rows], "y": self.y[rows]}


def _per_class(labels: torch.Tensor, counts: int, gen: torch.Generator) -> torch.Tensor:
    """``"(class count)"`` indices into ``labels``: ``counts`` of each class, without replacement, class-major."""
    picks = []
    for c in range(N_CLASSES):
        rows = (labels == c).nonzero().flatten()
        if len(rows) < counts:
            raise ConfigError(
                f"an episode needs {counts} images of class {c} but its domain holds {len(rows)}; lower data.shots, "
                "data.train_shot + data.train_query, or raise the examples per domain"
            )
        picks.append(rows[torch.randperm(len(rows), generator=gen)[:counts]])
    return torch.stack(picks)  # "class count"


class SourceEpisodes(Dataset):
    """Meta-training batches: ``tasks`` tasks, each the 10 digits of one random source domain, with
    ``shot`` support and ``query`` query images per class (labels are the digits, class-major)."""

    def __init__(
        self, source: list[tuple[torch.Tensor, torch.Tensor]], length: int, tasks: int, shot: int, query: int, seed: int
    ) -> None:
        self.source, self.length, self.tasks, self.shot, self.query, self.seed = (
            source,
            length,
            tasks,
            shot,
            query,
            seed,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        gen = torch.Generator().manual_seed(_seed(self.seed, 2, index))
        parts: dict[str, list[torch.Tensor]] = {"support": [], "support_labels": [], "query": [], "query_labels": []}
        for _ in range(self.tasks):
            x, y = self.source[int(torch.randint(len(self.source), (1,), generator=gen))]
            rows = _per_class(y, self.shot + self.query, gen)  # "class count"
            for name, cut in (("support", rows[:, : self.shot]), ("query", rows[:, self.shot :])):
                flat = cut.flatten()
                parts[name].append(x[flat])
                parts[f"{name}_labels"].append(y[flat])
        return {name: torch.stack(values) for name, values in parts.items()}


class TargetEpisodes(Dataset):
    """The test episodes of one target domain at one ``k`` (module docstring), each with a task axis of 1."""

    def __init__(
        self,
        target: dict[str, torch.Tensor],
        source: tuple[torch.Tensor, torch.Tensor],
        angle: float,
        k: int,
        episodes: int,
        source_sample: int,
        seed: int,
    ) -> None:
        self.target, self.source, self.angle, self.k = target, source, angle, k
        self.episodes, self.source_sample, self.seed = episodes, source_sample, seed

    def __len__(self) -> int:
        return self.episodes

    def __getitem__(self, index: int) -> Batch:
        gen = torch.Generator().manual_seed(_seed(self.seed, 3, self.angle, self.k, index))
        pool_x, pool_y = self.target["pool_x"], self.target["pool_y"]
        support = _per_class(pool_y, self.k, gen).flatten()
        source_gen = torch.Generator().manual_seed(
            _seed(self.seed, 4, index)
        )  # the same source sample for every target
        sx, sy = self.source
        picked = torch.randperm(len(sy), generator=source_gen)[: min(self.source_sample, len(sy))]
        episode = {
            "support": pool_x[support],
            "support_labels": pool_y[support],
            "query": self.target["test_x"],
            "query_labels": self.target["test_y"],
            "unlabelled": pool_x,
            "source": sx[picked],
            "source_labels": sy[picked],
        }
        batch = {name: value.unsqueeze(0) for name, value in episode.items()}
        batch["seed"] = torch.tensor([_seed(self.seed, 5, self.angle, self.k, index)])
        return batch
