"""Mean and 95% confidence interval over episodes (or seeds)."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class MeanWithCI(Metric):
    """Collects one value per episode; ``compute`` gives ``{"mean", "ci95", "n"}``.

    The interval is the normal approximation ``1.96 * std / sqrt(n)`` (sample std, ddof=1) used by the
    few-shot literature (Snell et al. 2017, Finn et al. 2017 report it over 600-1000 episodes).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor) -> None:
        self.values.append(values.detach().double().flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        v = dim_zero_cat(self.values)
        n = v.numel()
        ci = 1.96 * v.std(unbiased=True) / math.sqrt(n) if n > 1 else torch.tensor(float("nan"))
        return {"mean": v.mean(), "ci95": ci, "n": torch.tensor(float(n))}


def episode_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of each task: ``logits "task n way"``, ``labels "task n"`` -> ``"task"``."""
    return (logits.argmax(-1) == labels).float().mean(-1)
