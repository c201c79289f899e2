"""A run stopped after task 2 and resumed from ``last.ckpt`` ends exactly where an uninterrupted run does."""

from __future__ import annotations

import functools
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from continual.helpers import tiny_stream
from metalab.callbacks import RNGStateInCheckpoint
from metalab.learners.continual import EWC, ContinualLearner, DERPlusPlus, LwF
from metalab.models.mlp import MLP


class StopAfterEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(method, root, ckpt_path=None, stop_after=None) -> dict:
    L.seed_everything(0, workers=True)
    learner = ContinualLearner(MLP(36, (16, 16)), method, functools.partial(torch.optim.SGD, lr=0.1), plot=False)
    callbacks = [
        ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0, every_n_epochs=1),
        RNGStateInCheckpoint(),
    ]
    if stop_after is not None:
        callbacks.append(StopAfterEpoch(stop_after))
    stream = tiny_stream()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(root),
        callbacks=callbacks,
        **stream.trainer_arguments(),
    )
    trainer.fit(learner, datamodule=stream, ckpt_path=ckpt_path)
    if stop_after is not None:
        return {}
    trainer.test(learner, datamodule=stream, verbose=False)
    return json.loads((root / "continual_metrics.json").read_text())


@pytest.mark.parametrize(
    "factory",
    [
        lambda: DERPlusPlus(buffer_size=30, replay_batch_size=10, seed=0),
        lambda: EWC(ewc_lambda=2.0, sampled_labels=True, seed=0),
        lambda: LwF(),
    ],
    ids=["derpp", "ewc_sampled", "lwf"],
)
def test_resume_equals_uninterrupted(factory, tmp_path):
    straight = _fit(factory(), tmp_path / "straight")
    _fit(factory(), tmp_path / "resumed", stop_after=1)  # tasks 0 and 1, then stop
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    evaluated = torch.load(last, weights_only=False)["state_dict"]["accuracy.class_il.total"] > 0
    assert evaluated.all(dim=1).tolist() == [True, True, True, False, False, False]  # stopped after task 1
    resumed = _fit(factory(), tmp_path / "resumed", ckpt_path=str(last))
    assert resumed == straight
