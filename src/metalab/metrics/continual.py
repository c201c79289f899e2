"""Continual-learning metrics: the accuracy matrix ``R`` and the summaries the literature reports.

``R[i, j]`` is the accuracy (%) on task ``j`` after training task ``i`` (rows ``0..T-1``); ``b[j]`` is
the accuracy of the initial model on task ``j`` (for forward transfer). With ``T`` tasks:

- average accuracy  ``A = mean_j R[T-1, j]`` (Chaudhry et al. 2018; Mammoth's "accuracy")
- average forgetting ``F = mean_{j<T-1} (max_{j<=i<T-1} R[i, j] - R[T-1, j])`` (Chaudhry et al. 2018; rows
  before task j was learned are left out, as in Mammoth and Avalanche)
- backward transfer ``BWT = mean_{j<T-1} (R[T-1, j] - R[j, j])`` (Lopez-Paz & Ranzato 2017)
- forward transfer  ``FWT = mean_{j>0} (R[j-1, j] - b[j])`` (Lopez-Paz & Ranzato 2017)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics import Metric

from metalab.errors import ConfigError


class AccuracyMatrix(Metric):
    """Counts correct predictions per (evaluation row, task): ``compute() -> [rows, n_tasks]`` in %.

    Row ``0`` is the initial model (``b``), row ``i + 1`` the model after training task ``i``. States are
    sums, so the metric reduces across devices; they are persistent so a resumed run keeps its history.
    """

    full_state_update = False

    def __init__(self, n_tasks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_tasks < 1:
            raise ConfigError(f"n_tasks={n_tasks} is not allowed: must be at least 1")
        self.n_tasks = n_tasks
        self.add_state(
            "correct",
            default=torch.zeros(n_tasks + 1, n_tasks, dtype=torch.float64),
            dist_reduce_fx="sum",
            persistent=True,
        )
        self.add_state(
            "total",
            default=torch.zeros(n_tasks + 1, n_tasks, dtype=torch.float64),
            dist_reduce_fx="sum",
            persistent=True,
        )

    def update(
        self,
        row: int,
        task: int,
        predictions: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        *,
        correct: int | None = None,
        total: int | None = None,
    ) -> None:
        """Count one batch's ``predictions`` against ``targets``, or add the ``correct`` of ``total`` counts of
        an evaluation (:func:`metalab.learners.continual.loop.evaluate_task`) to entry ``(row, task)``."""
        if predictions is not None:
            correct, total = (predictions == targets).sum().double(), targets.numel()
        self.correct[row, task] += correct
        self.total[row, task] += total

    def compute(self) -> torch.Tensor:
        return 100.0 * self.correct / self.total  # NaN where a (row, task) was never evaluated

    def rows_done(self) -> int:
        """Rows ``0..k-1`` whose every task was evaluated."""
        done = (self.total > 0).all(dim=1)
        k = 0
        while k < len(done) and done[k]:
            k += 1
        return k


def _check(r: torch.Tensor) -> int:
    if r.dim() != 2 or r.shape[0] != r.shape[1]:
        raise ConfigError(f"accuracy matrix must be square [T, T]; got shape {tuple(r.shape)}")
    return r.shape[0]


def average_accuracy(r: torch.Tensor) -> float:
    """Mean accuracy over all tasks after the last task."""
    _check(r)
    return float(r[-1].mean())


def average_forgetting(r: torch.Tensor) -> float:
    """Mean drop from each old task's best accuracy to its final accuracy (0 for a single task)."""
    t = _check(r)
    if t < 2:
        return 0.0
    # Best accuracy on task j at rows j <= i < T-1 (after it was learned; earlier rows are not "knowledge").
    rows = torch.arange(t - 1).unsqueeze(1)
    learned = rows >= torch.arange(t - 1).unsqueeze(0)  # "i j"
    best = r[:-1, :-1].masked_fill(~learned, float("-inf")).max(dim=0).values
    return float((best - r[-1, :-1]).mean())


def backward_transfer(r: torch.Tensor) -> float:
    """Mean change of each old task from just after it was learned to the end (negative = forgetting)."""
    t = _check(r)
    if t < 2:
        return 0.0
    return float((r[-1, :-1] - r.diagonal()[:-1]).mean())


def forward_transfer(r: torch.Tensor, initial: torch.Tensor) -> float:
    """Mean accuracy on each task just before learning it, above the initial model's accuracy on it."""
    t = _check(r)
    if initial.shape != (t,):
        raise ConfigError(f"initial accuracies must have shape [{t}]; got {tuple(initial.shape)}")
    if t < 2:
        return 0.0
    return float((r.diagonal(offset=1) - initial[1:]).mean())


def summarise(r: torch.Tensor, initial: torch.Tensor | None = None) -> dict[str, float]:
    """``{"acc", "forgetting", "bwt", "fwt"}`` of a full ``[T, T]`` matrix (``fwt`` needs ``initial``)."""
    out = {"acc": average_accuracy(r), "forgetting": average_forgetting(r), "bwt": backward_transfer(r)}
    if initial is not None:
        out["fwt"] = forward_transfer(r, initial)
    return out


def plot_accuracy_matrix(r: torch.Tensor, path: str | Path, title: str) -> Path:
    """Save a heatmap of ``R`` (rows: after training task i; columns: evaluated on task j) as a PNG.

    Drawn on a :class:`matplotlib.figure.Figure` of its own, not through pyplot: the global backend stays
    what the user has (a notebook's inline backend keeps showing the user's own figures)."""
    from matplotlib.figure import Figure

    t = r.shape[0]
    fig = Figure(figsize=(1.0 + 0.8 * t, 0.8 + 0.8 * t))
    ax = fig.subplots()
    image = ax.imshow(r.numpy(), vmin=0, vmax=100, cmap="viridis")
    for i in range(t):
        for j in range(r.shape[1]):
            value = float(r[i, j])
            ax.text(
                j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8
            )
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_xticks(range(r.shape[1]))
    ax.set_yticks(range(t))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="accuracy %")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
