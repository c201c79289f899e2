"""ResumableDataLoader: a pass resumed mid-way continues exactly; a sampler that cannot skip (Lightning's
DistributedSampler under DDP) still loads, and a begun pass restarts with a warning instead of crashing."""

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from metalab.data.resumable import ResumableDataLoader
from metalab.data.streams import SeededBatchSampler

DATA = TensorDataset(torch.arange(20))


def _values(loader) -> list[int]:
    return [int(v) for (batch,) in loader for v in batch]


def test_a_pass_resumed_after_two_batches_serves_exactly_the_rest():
    whole = _values(ResumableDataLoader(DATA, batch_sampler=SeededBatchSampler(20, 4, True, 0, 0)))
    first = ResumableDataLoader(DATA, batch_sampler=SeededBatchSampler(20, 4, True, 0, 0))
    served = iter(first)
    next(served), next(served)
    state = first.state_dict()
    resumed = ResumableDataLoader(DATA, batch_sampler=SeededBatchSampler(20, 4, True, 0, 0))
    resumed.load_state_dict(state)
    assert state == {"batches_served": 2} and _values(resumed) == whole[8:]


def test_a_sampler_that_cannot_skip_restarts_the_pass_with_a_warning():
    sampler = DistributedSampler(DATA, num_replicas=2, rank=0, shuffle=False)
    loader = ResumableDataLoader(DATA, sampler=sampler, batch_size=2)
    assert not loader.can_skip and _values(loader) == list(range(0, 20, 2))
    loader.load_state_dict({"batches_served": 2})
    with pytest.warns(UserWarning, match="cannot skip"):
        assert _values(loader) == list(range(0, 20, 2))
