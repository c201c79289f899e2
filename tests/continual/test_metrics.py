"""Accuracy-matrix summaries on a hand-made matrix, where every figure can be worked out by hand."""

from __future__ import annotations

import pytest
import torch

from metalab.errors import ConfigError
from metalab.metrics.continual import (
    AccuracyMatrix,
    average_accuracy,
    average_forgetting,
    backward_transfer,
    forward_transfer,
    plot_accuracy_matrix,
    summarise,
)

# R[i, j]: accuracy on task j after training task i (3 tasks).
R = torch.tensor([[90.0, 40.0, 30.0], [60.0, 80.0, 45.0], [50.0, 70.0, 85.0]])
INITIAL = torch.tensor([10.0, 20.0, 25.0])


def test_summaries_by_hand():
    assert average_accuracy(R) == pytest.approx((50 + 70 + 85) / 3)
    # task 0: best 90 (row 0) -> 50; task 1: best 80 (row 1) -> 70
    assert average_forgetting(R) == pytest.approx(((90 - 50) + (80 - 70)) / 2)
    assert backward_transfer(R) == pytest.approx(((50 - 90) + (70 - 80)) / 2)
    # R[0, 1] - b1 = 40 - 20; R[1, 2] - b2 = 45 - 25
    assert forward_transfer(R, INITIAL) == pytest.approx((20 + 20) / 2)
    assert summarise(R, INITIAL)["fwt"] == pytest.approx(20.0)


def test_forgetting_ignores_rows_before_a_task_was_learned():
    r = torch.tensor([[90.0, 99.0], [90.0, 60.0]])  # 99 on task 1 before learning it is not knowledge
    assert average_forgetting(r) == 0.0
    assert average_forgetting(torch.tensor([[70.0]])) == 0.0


def test_accuracy_matrix_counts_and_rows_done():
    metric = AccuracyMatrix(n_tasks=2)
    metric.update(0, 0, torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 1, 1]))
    metric.update(0, 1, torch.tensor([2]), torch.tensor([3]))
    metric.update(1, 0, torch.tensor([1, 1]), torch.tensor([1, 1]))
    r = metric.compute()
    assert r[0].tolist() == [75.0, 0.0]
    assert r[1, 0] == 100.0 and torch.isnan(r[1, 1])
    assert metric.rows_done() == 1
    assert "correct" in metric.state_dict()  # persistent: a resumed run keeps its history


def test_bad_shapes_are_named():
    with pytest.raises(ConfigError, match="square"):
        average_accuracy(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="initial"):
        forward_transfer(R, torch.zeros(2))


def test_heatmap_is_written(tmp_path):
    path = plot_accuracy_matrix(R, tmp_path / "r.png", "test")
    assert path.stat().st_size > 1000
