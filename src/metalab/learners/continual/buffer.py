"""Replay buffers: reservoir (the default of ER and DER++) and task-balanced (filled at task ends).

Reservoir (Vitter 1985, as in Chaudhry et al. 2019 and Buzzega et al. 2020): after ``n`` examples
have streamed past, every one of them is in the buffer with probability ``size / n``: no task
boundaries are needed and old tasks keep their share. Tensors are allocated on
the first insertion from the example shapes, so one class serves images, labels, task ids and logits.
The buffer owns its random generator (seeded), so its content and its samples depend only on the seed.
"""

from __future__ import annotations

from typing import Any

import torch

from metalab.errors import ConfigError


class ReservoirBuffer:
    """``size`` slots of named tensors ``{"x": [size, ...], "y": [size], ...}`` filled by reservoir sampling."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ConfigError(f"learner.method.buffer_size={size} is not allowed: must be at least 1")
        self.size = size
        self.seen = 0
        self.data: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self.seen, self.size)

    @torch.no_grad()
    def add(self, examples: dict[str, torch.Tensor]) -> None:
        """Offer a batch (``{"x": [n, ...], ...}``, same keys every time) to the reservoir."""
        n = len(next(iter(examples.values())))
        if not self.data:
            self.data = {k: torch.zeros((self.size, *v.shape[1:]), dtype=v.dtype) for k, v in examples.items()}
        # Example number s (0-based, s = seen + i) goes to slot s while the buffer fills, then to a
        # uniform slot in [0, s] which is kept only if it is < size.
        positions = torch.arange(self.seen, self.seen + n)
        draws = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (positions + 1)).long()
        slots = torch.where(positions < self.size, positions, draws)
        keep = slots < self.size
        self.seen += n
        if not bool(keep.any()):
            return
        # When two examples of one batch draw the same slot, the later one wins, as in sequential insertion.
        rows = torch.nonzero(keep).squeeze(1)
        last = torch.full((self.size,), -1, dtype=torch.long).scatter_reduce(0, slots[rows], rows, "amax")
        targets = torch.nonzero(last >= 0).squeeze(1)
        sources = last[targets]
        for key, value in examples.items():
            self.data[key][targets] = value[sources].detach().to(self.data[key].dtype)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` distinct stored examples (fewer if the buffer holds fewer), uniformly at random."""
        filled = len(self)
        idx = torch.randperm(filled, generator=self.generator)[: min(n, filled)]
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "data": self.data, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.data = state["seen"], state["data"]
        self.generator.set_state(state["generator"])


class TaskBalancedBuffer(ReservoirBuffer):
    """``size`` slots shared evenly by the tasks seen so far, refilled only when a task ends.

    This is how Avalanche's ``Replay`` keeps its memory (experience-balanced, updated after each
    experience). The difference from the reservoir matters: while task ``t`` trains, this buffer holds
    tasks ``< t`` only, whereas a reservoir filled during training also replays task ``t`` itself, so
    less of each replayed batch rehearses old tasks. Each task keeps a random subset, shrunk (never
    redrawn) as later tasks claim their share.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__(size, seed)
        self.groups: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.data["y"]) if self.data else 0

    def add(self, examples: dict[str, torch.Tensor]) -> None:
        raise RuntimeError("TaskBalancedBuffer is filled at task ends: call add_task with the whole task")

    @torch.no_grad()
    def add_task(self, examples: dict[str, torch.Tensor]) -> None:
        """Store a random subset of one finished task (``{"x": [n, ...], "y": [n], ...}``) and rebalance."""
        n = len(examples["y"])
        keep = torch.randperm(n, generator=self.generator)[: self.size]
        self.groups.append({k: v[keep].detach().clone() for k, v in examples.items()})
        tasks = len(self.groups)
        quotas = [self.size // tasks + (i < self.size % tasks) for i in range(tasks)]  # earlier tasks get the rest
        self.groups = [{k: v[:q] for k, v in g.items()} for g, q in zip(self.groups, quotas)]
        self.data = {k: torch.cat([g[k] for g in self.groups]) for k in self.groups[0]}
        self.seen += n

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "groups": self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.groups = state["groups"]
