"""The Omniglot pools match the published split sizes and never share characters."""

import torch
from helpers import needs_omniglot

from metalab.data.omniglot import load_omniglot_splits

pytestmark = needs_omniglot


def test_vinyals_split_sizes_and_disjointness():
    pools = load_omniglot_splits("vinyals", image_size=28)
    assert {k: p.num_classes for k, p in pools.items()} == {"train": 4112, "val": 688, "test": 1692}
    assert {k: p.images.shape[0] for k, p in pools.items()} == {"train": 1028, "val": 172, "test": 423}
    assert pools["train"].images.shape[1:] == (20, 28, 28)
    # characters are disjoint across train, val and test
    chars = {k: set(p.global_char.tolist()) for k, p in pools.items()}
    assert not (chars["train"] & chars["test"]) and not (chars["val"] & chars["test"])
    assert not (chars["train"] & chars["val"])
    assert len(chars["train"] | chars["val"] | chars["test"]) == 1623


def test_images_are_ink_on_blank_and_rotations_differ():
    pool = load_omniglot_splits("vinyals", image_size=28)["test"]
    img = pool.images
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert 0.02 < img.mean() < 0.4  # mostly blank background, some ink
    same_char = (pool.char_of_class == pool.char_of_class[0]).nonzero().flatten()
    assert pool.rot_of_class[same_char].tolist() == [0, 1, 2, 3]
    views = pool.gather(same_char, torch.zeros(4, 1, dtype=torch.long))
    assert not torch.equal(views[0], views[1])
    assert torch.allclose(torch.rot90(views[0], 1, dims=(-2, -1)), views[1])


def test_trainval_and_alphabet_splits():
    assert load_omniglot_splits("vinyals_trainval")["train"].num_classes == 4800
    alpha = load_omniglot_splits("alphabets")
    assert alpha["train"].num_classes == 964 * 4 and alpha["test"].num_classes == 659 * 4
