"""Several mini-batches per Lightning batch (``learner.batches_per_step``) train exactly as one per batch."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from continual.helpers import tiny_stream
from metalab.data.streams import ChunkedBatchSampler, SeededBatchSampler
from metalab.learners.continual import EWC, ContinualLearner, DERPlusPlus
from metalab.learners.continual.loop import mini_batches
from metalab.models.mlp import MLP


def test_chunks_join_consecutive_mini_batches_and_skip_by_chunks():
    batches = list(SeededBatchSampler(23, 5, shuffle=True, seed=3, epoch=2))  # 4 full batches and one of 3
    chunked = ChunkedBatchSampler(SeededBatchSampler(23, 5, shuffle=True, seed=3, epoch=2), per_chunk=2)
    assert list(chunked) == [batches[0] + batches[1], batches[2] + batches[3], batches[4]]
    assert len(chunked) == 3
    chunked.skip_next(1)
    assert list(chunked) == [batches[2] + batches[3], batches[4]]


def test_mini_batches_cut_a_chunk_back_into_its_batches():
    chunk = {"x": torch.arange(26.0).reshape(13, 2), "y": torch.arange(13), "task": torch.zeros(13, dtype=torch.long)}
    parts = list(mini_batches(chunk, 5))
    assert [len(p["y"]) for p in parts] == [5, 5, 3]
    assert torch.equal(parts[1]["x"], chunk["x"][5:10]) and torch.equal(parts[2]["y"], chunk["y"][10:])


def _fit(method, root, batches_per_step: int, **trainer_kwargs):
    L.seed_everything(0, workers=True)
    learner = ContinualLearner(
        MLP(36, (16, 16)),
        method,
        functools.partial(torch.optim.SGD, lr=0.1),
        plot=False,
        batches_per_step=batches_per_step,
    )
    stream = tiny_stream()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(root),
        **stream.trainer_arguments(),
        **trainer_kwargs,
    )
    trainer.fit(learner, datamodule=stream)
    return learner, trainer, stream


@pytest.mark.parametrize(
    "factory",
    [
        lambda: DERPlusPlus(buffer_size=30, replay_batch_size=10, seed=0),  # replay draws from its own generator
        lambda: EWC(ewc_lambda=2.0, sampled_labels=True, seed=0, update="proximal"),  # hook after each optimiser step
    ],
    ids=["derpp", "ewc_proximal"],
)
def test_chunked_training_equals_one_batch_per_step(factory, tmp_path):
    one, one_trainer, _ = _fit(factory(), tmp_path / "one", batches_per_step=1)
    chunked, chunked_trainer, stream = _fit(factory(), tmp_path / "chunked", batches_per_step=3)
    assert stream.batches_per_step == 3
    assert chunked_trainer.global_step == one_trainer.global_step  # every mini-batch is still one optimiser step
    for (name, a), (_, b) in zip(one.net.state_dict().items(), chunked.net.state_dict().items()):
        assert torch.equal(a, b), name
    for scenario in ("class_il", "task_il"):
        assert torch.equal(one.accuracy[scenario].compute(), chunked.accuracy[scenario].compute())


def test_max_steps_stops_at_that_step(tmp_path):
    learner, trainer, stream = _fit(EWC(ewc_lambda=2.0, seed=0), tmp_path, batches_per_step=4, max_steps=7)
    assert stream.batches_per_step == 1 and trainer.global_step == 7


def test_bad_batches_per_step_is_one_clear_error():
    from metalab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"learner.batches_per_step=0 is not allowed"):
        ContinualLearner(MLP(36, (16,)), EWC(), functools.partial(torch.optim.SGD, lr=0.1), batches_per_step=0)


class CountBackward(L.Callback):
    """Overrides a step hook: Lightning must call it once per mini-batch, chunked or not."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


def test_every_mini_batch_goes_through_lightnings_step_hooks(tmp_path):
    counter = CountBackward()
    _, trainer, _ = _fit(
        DERPlusPlus(buffer_size=30, replay_batch_size=10, seed=0), tmp_path, batches_per_step=3, callbacks=[counter]
    )
    assert counter.calls == trainer.global_step > 0


def test_a_trainer_without_the_streams_arguments_is_one_clear_error(tmp_path):
    from metalab.errors import ConfigError

    learner = ContinualLearner(MLP(36, (16,)), EWC(), functools.partial(torch.optim.SGD, lr=0.1), plot=False)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        max_epochs=2,
    )
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=2, trainer.reload_dataloaders_every_n_epochs=0 is not"):
        trainer.fit(learner, datamodule=tiny_stream())
