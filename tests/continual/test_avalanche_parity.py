"""Given the same mini-batches, our loop computes what Avalanche's does, weight for weight.

The side-by-side benchmark hands Avalanche our stream's batches (``common.our_batch_order``); these tests
check that, on a tiny stream in float32, fine-tune then ends with the same weights as Avalanche's Naive,
and LwF with the teacher normalising by batch statistics the same as Avalanche's LwF, while LwF with the
stored-statistics teacher ends elsewhere (so the comparison can tell the two apart). Remaining gaps in
the benchmark are then design choices or rounding, not a different loop.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

pytest.importorskip("avalanche")
from benchmarks.continual.common import avalanche_benchmark, avalanche_strategy, our_batch_order  # noqa: E402
from continual.helpers import tiny_stream  # noqa: E402
from metalab.learners.continual import ContinualLearner, ContinualMethod, Finetune, LwF  # noqa: E402

LR = 0.1


def tiny_cnn() -> nn.Module:
    """Conv + batch norm, so the LwF teacher's batch-norm mode matters: ``[n 1 6 6] -> [n 10]``."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))


def train_ours(method: ContinualMethod, net: nn.Module, tmp_path: Path) -> nn.Module:
    learner = ContinualLearner(
        net, method, functools.partial(torch.optim.SGD, lr=LR), channels_last=False, evaluate_initial=False, plot=False
    )
    stream = tiny_stream()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **stream.trainer_arguments(),
    )
    trainer.fit(learner, datamodule=stream)
    return learner.net


def train_avalanche(name: str, ours: ContinualMethod, net: nn.Module) -> nn.Module:
    from avalanche.training.plugins import EvaluationPlugin

    stream = tiny_stream()
    strategy = avalanche_strategy(
        name,
        vars(ours),
        model=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=LR),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=stream.batch_size,
        train_epochs=stream.epochs_per_task,
        device="cpu",
        plugins=[our_batch_order(stream)],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    for experience in avalanche_benchmark(stream).train_stream:
        strategy.train(experience, num_workers=0)
    return net


def max_weight_gap(a: nn.Module, b: nn.Module) -> float:
    return max(
        float((p - q).abs().max())
        for p, q in zip(a.state_dict().values(), b.state_dict().values())
        if p.is_floating_point()
    )


@pytest.mark.parametrize(
    "ours, theirs, same",
    [(Finetune(), "finetune", True), (LwF(teacher_bn="batch"), "lwf", True), (LwF(teacher_bn="running"), "lwf", False)],
    ids=["finetune-naive", "lwf_batch_teacher-lwf", "lwf_running_teacher-lwf"],
)
def test_same_batches_give_avalanches_weights(ours, theirs, same, tmp_path):
    torch.manual_seed(0)
    initial = tiny_cnn()
    ours_net = train_ours(ours, copy.deepcopy(initial), tmp_path)
    theirs_net = train_avalanche(theirs, ours, copy.deepcopy(initial))
    gap = max_weight_gap(ours_net, theirs_net)
    assert max_weight_gap(ours_net, initial) > 0.05  # both trained...
    if same:
        assert gap < 1e-5, gap  # ...to the same weights
    else:
        assert gap > 1e-3, gap  # ...to different weights: the teacher's batch-norm mode is visible
