"""Bad input stops early with one message that names the key and what is allowed."""

from __future__ import annotations

import pytest
import torch

from continual.helpers import run_stream, synthetic_tensors
from metalab.data.streams import SplitStreamDataModule, task_il_mask
from metalab.errors import ConfigError, DataError, NumericalError
from metalab.learners.continual import EWC, ExperienceReplay


def test_replay_buffer_larger_than_the_stream(tmp_path):
    with pytest.raises(ConfigError, match=r"learner.method.buffer_size=5000 .* at most 300"):
        run_stream(ExperienceReplay(buffer_size=5000), tmp_path)


def test_task_il_evaluation_without_task_ids():
    with pytest.raises(DataError, match="task-IL evaluation needs task ids"):
        task_il_mask(None, n_classes=10, classes_per_task=2)
    mask = task_il_mask(torch.tensor([0, 4]), n_classes=10, classes_per_task=2)
    assert mask.sum(1).tolist() == [2, 2] and mask[1, 8:].all()


def test_an_empty_task():
    x_tr, y_tr, x_te, y_te = synthetic_tensors()
    keep = (y_tr != 6) & (y_tr != 7)  # classes 6 and 7 form task 3
    stream = SplitStreamDataModule.from_tensors(x_tr[keep], y_tr[keep], x_te, y_te, dataset="mnist")
    with pytest.raises(DataError, match=r"task 3 is empty in the train split: no examples of classes \[6, 7\]"):
        stream.setup("fit")


def test_nan_penalty_stops_training(tmp_path):
    class PoisonedEWC(EWC):
        def after_task(self, learner, task):
            super().after_task(learner, task)
            importance = self.quadratic.importance
            name = next(iter(importance))
            importance[name] = importance[name].clone().fill_(float("nan"))

    with pytest.raises(NumericalError, match=r"the ewc penalty became nan at step \d+ \(task 1"):
        run_stream(PoisonedEWC(ewc_lambda=1.0), tmp_path)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(n_tasks=6), "data.n_tasks * data.classes_per_task"),
        (dict(dataset="cifar100"), "data.dataset"),
        (dict(train_examples_per_task=0), "data.train_examples_per_task"),
        (dict(epochs_per_task=0), "data.epochs_per_task"),
    ],
)
def test_stream_settings_out_of_range(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace("*", r"\*")):
        SplitStreamDataModule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(ewc_lambda=float("nan")), "learner.method.ewc_lambda"),
        (dict(gamma=1.5), "learner.method.gamma"),
    ],
)
def test_ewc_settings_out_of_range(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        EWC(**kwargs)
