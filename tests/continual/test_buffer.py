"""Replay buffers: reservoir sampling keeps every streamed example with the same probability; the
task-balanced buffer splits its slots evenly over finished tasks."""

from __future__ import annotations

import pytest
import torch

from metalab.errors import ConfigError
from metalab.learners.continual.buffer import ReservoirBuffer, TaskBalancedBuffer
from metalab.learners.continual.loop import PlainLearner
from metalab.learners.continual.methods import ExperienceReplay


def test_fills_in_order_then_keeps_a_uniform_share():
    buffer = ReservoirBuffer(size=50, seed=0)
    buffer.add({"y": torch.arange(30)})
    assert len(buffer) == 30 and buffer.data["y"][:30].tolist() == list(range(30))
    first_half = []
    for seed in range(40):
        buffer = ReservoirBuffer(size=50, seed=seed)
        for start in range(0, 1000, 25):  # 1000 examples in batches of 25
            buffer.add({"y": torch.arange(start, start + 25)})
        assert len(buffer) == 50 and buffer.seen == 1000
        assert len(set(buffer.data["y"].tolist())) == 50  # no duplicates
        first_half.append(float((buffer.data["y"] < 500).float().mean()))
    # Each example is kept with probability 50/1000, so half of the buffer comes from the first half.
    assert abs(sum(first_half) / len(first_half) - 0.5) < 0.05


def test_same_seed_same_content_and_samples():
    def fill(seed: int) -> tuple[list[int], list[int]]:
        buffer = ReservoirBuffer(size=20, seed=seed)
        for start in range(0, 200, 10):
            buffer.add({"y": torch.arange(start, start + 10), "x": torch.randn(10, 3)})
        return buffer.data["y"].tolist(), buffer.sample(5)["y"].tolist()

    assert fill(1) == fill(1)
    assert fill(1) != fill(2)


def test_task_balanced_buffer_shares_slots_evenly_and_only_shrinks_old_subsets():
    buffer = TaskBalancedBuffer(size=10, seed=0)
    assert len(buffer) == 0
    kept_before: set[int] = set()
    for task, expected in enumerate([[10], [5, 5], [4, 3, 3]]):
        buffer.add_task({"y": torch.arange(100) + 100 * task})
        ys = buffer.data["y"].tolist()
        assert len(ys) == 10 == len(set(ys))
        assert [sum(1 for y in ys if y // 100 == t) for t in range(task + 1)] == expected
        old = {y for y in ys if y < 100 * task}
        assert old <= kept_before  # earlier tasks' samples are a subset of what they had, not a redraw
        kept_before = set(ys)


def test_task_end_replay_holds_only_finished_tasks():
    learner = PlainLearner(
        torch.nn.Linear(3, 4), None, [(torch.randn(40, 3), torch.full((40,), 2 * task)) for task in range(2)]
    )
    er = ExperienceReplay(buffer_size=16, replay_batch_size=8, fill="task_end")
    batch = {"x": torch.randn(8, 3), "y": torch.zeros(8, dtype=torch.long), "task": torch.zeros(8, dtype=torch.long)}
    er.after_step(learner, batch, torch.zeros(8, 2))
    assert er.replay_batch(learner, 8) is None  # nothing replayed while the first task trains
    er.after_task(learner, 0)
    er.after_step(
        learner, {**batch, "y": torch.full((8,), 2), "task": torch.ones(8, dtype=torch.long)}, torch.zeros(8, 2)
    )
    replay = er.replay_batch(learner, 8)
    assert replay.labels.eq(0).all()  # task 1's batches never enter the buffer
    er.after_task(learner, 1)
    assert er.buffer.data["task"].bincount().tolist() == [8, 8]


def test_unknown_fill_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="learner.method.fill"):
        ExperienceReplay(fill="fifo")
