"""Reservoir sampling keeps every streamed example with the same probability."""

from __future__ import annotations

import torch

from metalab.learners.continual.buffer import ReservoirBuffer


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
