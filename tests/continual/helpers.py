"""Tiny synthetic streams and a one-call runner, so every continual test trains in well under a second."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import torch

from metalab.data.streams import SplitStreamDataModule
from metalab.learners.continual import ContinualLearner, ContinualMethod
from metalab.models.mlp import MLP


def synthetic_tensors(n_train: int = 300, n_test: int = 100, side: int = 6, seed: int = 0):
    """10 classes, each a fixed random prototype image plus noise: ``x [n, 1, side, side]``, ``y [n]``."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(10, 1, side, side, generator=gen)

    def draw(n: int):
        y = torch.arange(n) % 10
        return prototypes[y] + 0.8 * torch.randn(n, 1, side, side, generator=gen), y

    return (*draw(n_train), *draw(n_test))


def tiny_stream(**kwargs) -> SplitStreamDataModule:
    options = dict(dataset="mnist", epochs_per_task=1, batch_size=10, eval_batch_size=50, seed=0)
    options.update(kwargs)
    return SplitStreamDataModule.from_tensors(*synthetic_tensors(), **options)


def run_stream(
    method: ContinualMethod, tmp_path: Path, seed: int = 0, lr: float = 0.1, stream=None, **trainer_kwargs
) -> tuple[ContinualLearner, dict[str, float]]:
    """Fit and test ``method`` on the tiny stream; return the learner and the test metrics."""
    L.seed_everything(seed, workers=True)
    stream = stream or tiny_stream(seed=seed)
    learner = ContinualLearner(MLP(36, (16, 16)), method, functools.partial(torch.optim.SGD, lr=lr), plot=False)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(tmp_path),
        **{**stream.trainer_arguments(), **trainer_kwargs},
    )
    trainer.fit(learner, datamodule=stream)
    trainer.test(learner, datamodule=stream, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return learner, metrics


REPO = Path(__file__).resolve().parents[2]
