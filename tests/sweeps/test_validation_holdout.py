"""data.eval_split=validation: sweeps select on held-out training examples, never on the test set."""

import pytest
import torch

from metalab.data.streams import SplitStreamDataModule
from metalab.errors import ConfigError


def stream(**kwargs) -> SplitStreamDataModule:
    x_train = torch.arange(400, dtype=torch.float32).view(400, 1, 1, 1)  # each image holds its own index
    y_train = torch.arange(400) % 10
    x_test = -torch.ones(100, 1, 1, 1)
    y_test = torch.arange(100) % 10
    module = SplitStreamDataModule.from_tensors(x_train, y_train, x_test, y_test, dataset="mnist", **kwargs)
    module.setup()
    return module


def test_held_out_examples_replace_the_test_set_and_leave_training():
    module = stream(eval_split="validation", validation_examples_per_task=30)
    for train, held in zip(module.train_tasks, module.test_tasks):
        assert len(held) == 30 and len(train) == 80 - 30
        train_ids, held_ids = set(train.x.flatten().tolist()), set(held.x.flatten().tolist())
        assert not train_ids & held_ids and min(held_ids) >= 0  # disjoint, and no test image (-1) among them
        assert set(held.y.tolist()) == set(train.y.tolist())  # both digits of the task
    same = stream(eval_split="validation", validation_examples_per_task=30)
    assert all(torch.equal(a.x, b.x) for a, b in zip(module.test_tasks, same.test_tasks))  # fixed by subset_seed


def test_default_evaluates_on_the_test_set():
    module = stream()
    assert all(bool((t.x == -1).all()) for t in module.test_tasks)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"eval_split": "val"}, "data.eval_split"),
        ({"eval_split": "validation", "validation_examples_per_task": 80}, "data.validation_examples_per_task"),
    ],
)
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        stream(**kwargs)
