"""Episodes have the documented layout, are reproducible, and impossible shapes are refused."""

from dataclasses import dataclass

import pytest
import torch

from metalab.data.episodes import EpisodeDataset, EpisodeSpec, EpochEpisodeSampler, episode_generator, sample_episode
from metalab.errors import ConfigError


@dataclass
class LabelledPool:
    """A synthetic pool whose every image is filled with its class id, to check the layout."""

    classes: int = 12
    examples: int = 20
    name: str = "synthetic"

    @property
    def num_classes(self) -> int:
        return self.classes

    @property
    def examples_per_class(self) -> int:
        return self.examples

    def gather(self, classes, examples):
        # value = class id * 100 + example id, constant over the image
        values = classes[:, None] * 100 + examples
        return values[..., None, None, None].float().expand(*values.shape, 1, 4, 4).clone()


def test_layout_is_class_major_with_remapped_labels():
    spec = EpisodeSpec(way=5, shot=3, query=4)
    ep = sample_episode(LabelledPool(), spec, episode_generator(0, 0, 0))
    assert ep["support"].shape == (15, 1, 4, 4) and ep["query"].shape == (20, 1, 4, 4)
    assert ep["support_labels"].tolist() == [c for c in range(5) for _ in range(3)]
    support_class = (ep["support"][:, 0, 0, 0] // 100).long()
    query_class = (ep["query"][:, 0, 0, 0] // 100).long()
    # every label names one original class, the same in support and query, all classes distinct
    mapping = {int(label): int(c) for label, c in zip(ep["support_labels"], support_class)}
    assert len(set(mapping.values())) == 5
    assert all(mapping[int(label)] == int(c) for label, c in zip(ep["query_labels"], query_class))
    # no example appears twice within a class
    ids = torch.cat([ep["support"][:, 0, 0, 0], ep["query"][:, 0, 0, 0]])
    assert ids.unique().numel() == ids.numel()


def test_episode_depends_only_on_seed_stream_index():
    pool, spec = LabelledPool(), EpisodeSpec(5, 1, 2)
    a = EpisodeDataset(pool, spec, 10, seed=3, stream=0)
    torch.manual_seed(123)  # global RNG must not matter
    first = a[7]["support"]
    torch.manual_seed(999)
    assert torch.equal(first, a[7]["support"])
    assert not torch.equal(a[7]["support"], a[8]["support"])
    assert not torch.equal(first, EpisodeDataset(pool, spec, 10, seed=4, stream=0)[7]["support"])


def test_epoch_sampler_gives_new_episodes_each_epoch():
    sampler = EpochEpisodeSampler(4)
    assert list(sampler) == [0, 1, 2, 3]
    sampler.set_epoch(2)
    assert list(sampler) == [8, 9, 10, 11]


@pytest.mark.parametrize(
    "spec, message",
    [
        (EpisodeSpec(13, 1, 1), r"data.train.way=13 is not allowed: must be <= 12"),
        (EpisodeSpec(1, 1, 1), r"data.train.way=1 is not allowed"),
        (EpisodeSpec(5, 0, 1), r"data.train.shot=0 is not allowed: must be >= 1"),
        (EpisodeSpec(5, -2, 1), r"data.train.shot=-2"),
        (EpisodeSpec(5, 1, 0), r"data.train.query=0"),
        (EpisodeSpec(5, 15, 6), r"must be <= 20, the examples per class"),
    ],
)
def test_impossible_episodes_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        spec.validate(LabelledPool(), "data.train")
