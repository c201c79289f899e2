"""Domain adaptation (issue 34): domain distances, adaptation objects and the k check, on tiny tensors."""

import numpy as np
import pytest
import torch

from metalab.data.domain_shift import RotatedDomains, _per_class
from metalab.errors import ConfigError
from metalab.learners.domain.adaptations import Coral, Episode, FineTune, Scratch, SourceOnly
from metalab.metrics.domain import linear_mmd2, proxy_a_distance
from metalab.models.lenet import LeNet


def test_linear_mmd_is_the_squared_distance_of_the_means():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 3, generator=gen).double(), torch.randn(5, 3, generator=gen).double() + 1
    expected = np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2)
    assert float(linear_mmd2(a, b)) == pytest.approx(expected, rel=1e-12)


def test_proxy_a_distance_tells_separable_from_identical_domains():
    gen = torch.Generator().manual_seed(1)
    same = proxy_a_distance(torch.randn(200, 4, generator=gen), torch.randn(200, 4, generator=gen), generator=gen)
    apart = proxy_a_distance(torch.randn(200, 4, generator=gen), torch.randn(200, 4, generator=gen) + 3, generator=gen)
    assert apart == pytest.approx(2.0, abs=0.05) and abs(same) < 0.4


@pytest.mark.parametrize("shots", [[1, 5, 101], [-1]])
def test_k_above_the_targets_examples_per_class_is_one_error_naming_the_key(shots):
    with pytest.raises(
        ConfigError, match=r"data\.shots=.* must be an integer in \[0, 100\].*target_examples_per_class"
    ):
        RotatedDomains(shots=shots, target_examples_per_class=100)


def test_a_target_angle_must_be_held_out():
    with pytest.raises(ConfigError, match="data.target_angles"):
        RotatedDomains(source_angles=[0, 15], target_angles=[15, 90])


def _episode(k: int = 2, seed: int = 7) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(k)
    return Episode(
        support=torch.rand(10 * k, 1, 28, 28, generator=gen),
        support_labels=labels,
        unlabelled=torch.rand(16, 1, 28, 28, generator=gen),
        source=torch.rand(16, 1, 28, 28, generator=gen),
        source_labels=torch.randint(10, (16,), generator=gen),
        seed=seed,
    )


def _tiny() -> LeNet:
    return LeNet(channels=(2, 3), hidden=(8,))


def test_adaptations_leave_the_source_model_alone_and_fit_the_support():
    model, episode = _tiny(), _episode()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = FineTune(part="head", steps=5).adapt(model, episode)
    full = FineTune(part="all", steps=60, lr=0.01).adapt(model, episode)
    Coral(steps=2, batch=8, labelled_weight=0.0).adapt(model, episode)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(head.conv[0].weight, model.conv[0].weight) and not torch.equal(
        head.head.weight, model.head.weight
    )
    assert (full(episode.support).argmax(-1) == episode.support_labels).float().mean() > 0.9
    assert SourceOnly().adapt(model, episode) is model


def test_scratch_starts_from_the_episodes_seed_not_from_the_source_weights():
    model = _tiny()
    first, again = (Scratch(steps=0).adapt(model, _episode(seed=11)) for _ in range(2))
    other = Scratch(steps=0).adapt(model, _episode(seed=12))
    assert torch.equal(first.conv[0].weight, again.conv[0].weight)
    assert not torch.equal(first.conv[0].weight, model.conv[0].weight)
    assert not torch.equal(first.conv[0].weight, other.conv[0].weight)


def test_episode_draws_are_class_major_and_without_replacement():
    labels = torch.arange(10).repeat(4)
    rows = _per_class(labels, 3, torch.Generator().manual_seed(0))
    assert rows.shape == (10, 3) and len(set(rows.flatten().tolist())) == 30
    assert torch.equal(labels[rows], torch.arange(10).unsqueeze(1).expand(10, 3))
