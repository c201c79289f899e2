"""Fitness for regularized evolution and random search: short training of each cell from scratch.

A cell's fitness is the search-validation accuracy of its :class:`~metalab.nas.network.CellNetwork`
after ``steps`` SGD steps on the search-train half (the same halves DARTS searches on, from the CIFAR-10
training set only). The initialisation and batch order come from the run's seed and the cell's number,
so the fitness is a fixed function of the cell: evolution and random search see the same landscape,
and a cell asked twice is trained once (cached) yet counted as an evaluation both times.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metalab.data.cifar10 import Tensors, batches, search_split
from metalab.errors import require
from metalab.nas.network import CellNetwork
from metalab.nas.space import Genotype, search_space


@torch.no_grad()
def accuracy(network: torch.nn.Module, data: Tensors, batch_size: int = 500) -> float:
    """Fraction of ``data`` classified correctly (batch norm in inference mode)."""
    network.eval()
    x, y = data
    correct = sum(
        int((network(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
        for i in range(0, len(y), batch_size)
    )
    return correct / len(y)


def short_training_accuracy(
    genotype: Genotype,
    train: Tensors,
    valid: Tensors,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    channels: int = 16,
    cells_per_stage: int = 1,
) -> float:
    """Validation accuracy of ``genotype``'s network after ``steps`` steps of SGD (momentum 0.9, Nesterov,
    weight decay 5e-4, cosine learning rate to 0)."""
    torch.manual_seed(seed)
    network = CellNetwork(genotype, channels, cells_per_stage)
    optimizer = torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    stream = batches(train, batch_size, torch.Generator().manual_seed(seed))
    network.train()
    for _ in range(steps):
        x, y = next(stream)
        loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return accuracy(network, valid)


class CellTrainingProblem:
    """The :class:`~metalab.search.problems.Problem` of cell search: genomes are six operation indices
    (:func:`metalab.nas.space.search_space`), fitness the short-training accuracy (module docstring)."""

    objectives = 1

    def __init__(
        self,
        search_examples: int = 6000,
        subset_seed: int = 0,
        resolution: int = 16,
        steps: int = 100,
        batch_size: int = 64,
        learning_rate: float = 0.05,
        channels: int = 16,
        cells_per_stage: int = 1,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        require(steps >= 1, "problem.steps", ">= 1", steps)
        self.space = search_space()
        self.train, self.valid = search_split(search_examples, subset_seed, resolution, data_dir)
        require(
            batch_size <= len(self.train[1]),
            "problem.batch_size",
            f"<= {len(self.train[1])} (half the search examples)",
            batch_size,
        )
        self.steps, self.batch_size, self.learning_rate = steps, batch_size, learning_rate
        self.channels, self.cells_per_stage, self.seed = channels, cells_per_stage, seed
        self.cache: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []  # every evaluation in order: genotype, fitness, seconds

    def fitness_of(self, genotype: Genotype) -> float:
        key = str(genotype)
        start = time.perf_counter()
        if key not in self.cache:
            self.cache[key] = short_training_accuracy(
                genotype,
                self.train,
                self.valid,
                self.steps,
                self.batch_size,
                self.learning_rate,
                seed=self.seed * 100_003 + genotype.index(),
                channels=self.channels,
                cells_per_stage=self.cells_per_stage,
            )
        self.history.append({"genotype": key, "fitness": self.cache[key], "seconds": time.perf_counter() - start})
        return self.cache[key]

    def evaluate(self, genomes: np.ndarray, seed: int = 0) -> np.ndarray:
        """Fitness of each genome row; ``seed`` (the generation's) is not used: see the module docstring."""
        return np.array([self.fitness_of(Genotype.from_indices(row)) for row in genomes])

    def assess(self, searcher: Any, seed: int = 0) -> dict[str, float]:
        best = Genotype.from_indices(searcher.best().genome)
        trained = [h["seconds"] for h in self.history if h["seconds"] > 0.05]
        return {
            "best_fitness": self.cache[str(best)],
            "genotype_index": float(best.index()),
            "distinct_cells": float(len(self.cache)),
            "seconds_per_trained_cell": float(np.mean(trained)) if trained else float("nan"),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"cache": dict(self.cache), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cache, self.history = dict(state["cache"]), list(state["history"])
