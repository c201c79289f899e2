"""Domain-incremental streams (Permuted MNIST): the transforms, the stream, and the learner's domain-IL evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from continual.helpers import REPO, run_stream, synthetic_tensors
from metalab.data.domain_streams import DomainIncrementalStream, PixelPermutation, Rotation
from metalab.data.streams import subset_indices
from metalab.errors import ConfigError
from metalab.learners.continual import ExperienceReplay, Finetune, LwF, Progressive


def tiny_domain_stream(n_tasks: int = 3, transform=None, **kwargs) -> DomainIncrementalStream:
    options = dict(
        n_tasks=n_tasks,
        transform=transform or PixelPermutation(seed=0),
        epochs_per_task=1,
        batch_size=10,
        eval_batch_size=50,
        seed=0,
    )
    options.update(kwargs)
    return DomainIncrementalStream.from_tensors(*synthetic_tensors(), **options)


def test_permutations_are_avalanches_draws():
    """Task t's permutation is the (t+1)-th numpy RandomState(seed).permutation(h*w), pixel i <- pixel perm[i]."""
    rng = np.random.RandomState(7)
    draws = [rng.permutation(36) for _ in range(3)]
    x = torch.randn(4, 1, 6, 6)
    permute = PixelPermutation(seed=7)
    for task, draw in enumerate(draws):
        expected = x.numpy().reshape(4, 36)[:, draw].reshape(4, 1, 6, 6)
        assert torch.equal(permute(x, task), torch.from_numpy(expected))
    shifted = PixelPermutation(seed=7, first_unpermuted=True)
    assert torch.equal(shifted(x, 0), x)
    assert torch.equal(shifted(x, 2), permute(x, 1))


def test_permutation_matches_avalanches_transform():
    cmnist = pytest.importorskip("avalanche.benchmarks.classic.cmnist")
    x = torch.rand(1, 28, 28)
    ours = PixelPermutation(seed=3)
    rng = np.random.RandomState(3)  # what PermutedMNIST(seed=3) draws, one permutation per experience
    for task in range(2):
        theirs = cmnist.PixelsPermutation(torch.from_numpy(rng.permutation(784)).long())
        assert torch.equal(ours(x.unsqueeze(0), task)[0], theirs(x))


def test_rotation_by_quarter_turns_is_exact():
    x = torch.randn(2, 1, 6, 6)
    rotate = Rotation(step_degrees=90.0)
    assert torch.allclose(rotate(x, 0), x, atol=1e-6)
    # A counter-clockwise quarter turn on screen (y axis down) moves column j of row i to row (w-1-j), col i.
    quarter = rotate(x, 1)
    assert torch.allclose(quarter, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5) or torch.allclose(
        quarter, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5
    )
    assert torch.allclose(rotate(x, 2), torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5)


def test_every_task_holds_the_same_labels_seen_through_its_own_transform():
    x_tr, y_tr, x_te, y_te = synthetic_tensors()
    stream = tiny_domain_stream(n_tasks=3, train_examples_per_task=120, test_examples_per_task=40)
    stream.setup("fit")
    assert stream.scenarios == ("domain_il",) and stream.n_classes == 10
    assert [len(t) for t in stream.train_tasks] == [120] * 3 and [len(t) for t in stream.test_tasks] == [40] * 3
    permute = PixelPermutation(seed=0)
    for task in range(3):
        part = stream.train_tasks[task]
        assert part.task == task
        keep = subset_indices(len(y_tr), 120, 0, task)  # the subset this task kept (a different one per task)
        assert torch.equal(part.y, y_tr[keep])
        assert torch.equal(part.x, permute(x_tr[keep], task))
    assert not torch.equal(stream.train_tasks[0].x[:5], stream.train_tasks[1].x[:5])


def test_learner_scores_domain_il_by_the_argmax_over_all_outputs(tmp_path):
    """R's last row equals an accuracy computed here by hand (plain argmax, no task masking)."""
    stream = tiny_domain_stream(n_tasks=3)
    learner, metrics = run_stream(Finetune(), tmp_path, stream=stream)
    assert {f"test/domain_il/{k}" for k in ("acc", "forgetting", "bwt", "fwt")} <= set(metrics)
    assert not any("class_il" in k or "task_il" in k for k in metrics)
    learner.net.eval()
    by_hand = []
    with torch.no_grad():
        for part in stream.test_tasks:
            by_hand.append(100.0 * float((learner.net(part.x).argmax(-1) == part.y).float().mean()))
    final = learner.final["domain_il"].compute()[0].tolist()  # the test pass over every task
    assert final == pytest.approx(by_hand, abs=1e-4)
    assert metrics["test/domain_il/acc"] == pytest.approx(sum(by_hand) / 3, abs=1e-4)


def test_replay_beats_finetune_on_a_domain_stream(tmp_path):
    """Three permutations of the prototypes: fine-tune forgets the first ones, a buffer keeps them."""
    _, finetune = run_stream(Finetune(), tmp_path, stream=tiny_domain_stream(n_tasks=3))
    _, replay = run_stream(ExperienceReplay(buffer_size=100), tmp_path, stream=tiny_domain_stream(n_tasks=3))
    assert replay["test/domain_il/forgetting"] < finetune["test/domain_il/forgetting"]


def test_lwf_distils_every_output_after_the_first_task(tmp_path):
    learner, _ = run_stream(LwF(), tmp_path, stream=tiny_domain_stream(n_tasks=2))
    assert learner.method.old_classes == 10


def test_methods_that_need_task_ids_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"learner.method=progressive needs the task id .* domain_il"):
        run_stream(Progressive(), tmp_path, stream=tiny_domain_stream(n_tasks=2))


def test_a_transform_is_chosen_in_config():
    """data.transform._target_ picks the domain shift: Rotated MNIST without new stream code."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "+experiment=permuted_mnist/finetune",
                "~data.transform.seed",
                "~data.transform.first_unpermuted",
                "data.transform._target_=metalab.data.domain_streams.Rotation",
                "+data.transform.step_degrees=90",
            ],
        )
    stream = instantiate(cfg.data, train_examples_per_task=None, test_examples_per_task=None)
    stream._tensors = synthetic_tensors()
    stream.setup("fit")
    x_tr = synthetic_tensors()[0]
    assert torch.allclose(stream.train_tasks[2].x, torch.rot90(x_tr, 2, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize(
    "transform, message",
    [
        (None, r"data.transform=None is not allowed"),
        (lambda x, task: x[:, :, :3], r"must map images \[n, c, h, w\] to the same shape"),
    ],
)
def test_bad_transforms(transform, message):
    with pytest.raises(ConfigError, match=message):
        stream = DomainIncrementalStream.from_tensors(*synthetic_tensors(), n_tasks=2, transform=transform)
        stream.setup("fit")
