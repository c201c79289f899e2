"""Omniglot as a pool of classes for few-shot episodes.

The compact file holds the 32,460 original 105x105 binary drawings (see shared/data/README.md). We
invert them so ink is 1, shrink them with area averaging to ``image_size`` (28 by default, as in
Vinyals et al. 2016 and Snell et al. 2017) and keep one tensor of base characters
``[char, drawer, h, w]``. A *class* is a (character, rotation) pair: rotations by 90/180/270 degrees
make new classes, as in the Vinyals split. Rotation happens when an episode is drawn, so the pool
holds each drawing once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metalab.data.files import locate
from metalab.errors import ConfigError

OMNIGLOT_FILE = "omniglot/omniglot.npz"
VINYALS_DIR = "omniglot/splits/vinyals"
DRAWERS = 20

# split name -> (file of the training classes, of the validation classes, of the test classes)
SPLITS = {
    "vinyals": ("train", "val", "test"),
    "vinyals_trainval": ("trainval", "val", "test"),
}
ALPHABET_SPLIT = "alphabets"  # background alphabets for training, evaluation alphabets for val/test


@dataclass
class ClassPool:
    """The classes of one split: base drawings and the (character, rotation) of each class.

    images: ``[char, drawer, h, w]`` float32, ink = 1.
    char_of_class / rot_of_class: ``[class]`` long; rotation in quarter turns (0..3).
    global_char: ``[char]`` the character's row in the full data set (for provenance and checks).
    """

    name: str
    images: torch.Tensor
    char_of_class: torch.Tensor
    rot_of_class: torch.Tensor
    global_char: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.char_of_class.numel())

    @property
    def examples_per_class(self) -> int:
        return int(self.images.shape[1])

    def gather(self, classes: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        """Images of ``examples[i, j]`` of class ``classes[i]``: ``[way, n, 1, h, w]``."""
        chars = self.char_of_class[classes]
        imgs = self.images[chars.unsqueeze(1), examples]  # "way n h w"
        rots = self.rot_of_class[classes]
        for k in rots.unique().tolist():
            if k:
                rows = rots == k
                imgs[rows] = torch.rot90(imgs[rows], k, dims=(-2, -1))
        return imgs.unsqueeze(2)


def load_omniglot_splits(
    split: str = "vinyals", image_size: int = 28, data_dir: str | None = None
) -> dict[str, ClassPool]:
    """Return ``{"train", "val", "test"}`` class pools for ``split``.

    ``vinyals``: 1028/172/423 characters x 4 rotations (4112/688/1692 classes), the split of
    Vinyals et al. 2016 used by Snell et al. 2017. ``vinyals_trainval``: train on train+val (4800
    classes) for final runs, as Snell et al. did. ``alphabets``: the 30 background alphabets (964
    characters x 4 rotations) for training, the 20 evaluation alphabets for test; there is no separate
    validation set, so val monitors the test classes and must not be used for model selection.
    """
    if image_size < 8 or image_size > 105:
        raise ConfigError(f"data.image_size={image_size} is not allowed: must be in [8, 105]")
    npz = locate(OMNIGLOT_FILE, data_dir)
    images, index = _load_characters(str(npz), image_size)
    if split in SPLITS:
        files = SPLITS[split]
        return {
            stage: _pool_from_split_file(
                f"{split}:{stage}", locate(f"{VINYALS_DIR}/{name}.txt", data_dir), images, index
            )
            for stage, name in zip(("train", "val", "test"), files)
        }
    if split == ALPHABET_SPLIT:
        background = [c for (alpha, _), c in index.items() if alpha in _background_alphabets(str(npz))]
        evaluation = sorted(set(index.values()) - set(background))
        train = _pool_from_chars("alphabets:train", images, sorted(background))
        test = _pool_from_chars("alphabets:test", images, evaluation)
        return {"train": train, "val": test, "test": test}
    allowed = ", ".join([*SPLITS, ALPHABET_SPLIT])
    raise ConfigError(f"data.split={split!r} is not allowed: must be one of {allowed}")


@lru_cache(maxsize=2)
def _load_characters(npz_path: str, image_size: int) -> tuple[torch.Tensor, dict[tuple[str, int], int]]:
    """All 1623 characters resized: ``[char, drawer, h, w]``, and (alphabet, character number) -> char."""
    with np.load(npz_path) as z:
        packed, alphabet, character = z["images_packed"], z["alphabet"], z["character"]
        names = [str(n) for n in z["alphabet_names"]]
    # Unpack and shrink in chunks: the full 105x105 float copy would take 1.4 GB at once.
    chunks = []
    for start in range(0, len(packed), 2048):
        ink = 1.0 - np.unpackbits(packed[start : start + 2048], axis=-1, count=105).astype(np.float32)
        x = torch.from_numpy(ink).unsqueeze(1)  # "n 1 105 105", ink = 1
        if image_size != 105:
            x = F.interpolate(x, size=(image_size, image_size), mode="area")
        chunks.append(x[:, 0])
    x = torch.cat(chunks)
    # Rows are sorted by (split, alphabet, character, drawer): exactly 20 drawings per character.
    x = x.reshape(-1, DRAWERS, image_size, image_size).contiguous()
    firsts = np.arange(0, len(alphabet), DRAWERS)
    index = {(names[alphabet[i]], int(character[i]) + 1): k for k, i in enumerate(firsts)}
    return x, index


@lru_cache(maxsize=2)
def _background_alphabets(npz_path: str) -> frozenset[str]:
    with np.load(npz_path) as z:
        names = [str(n) for n in z["alphabet_names"]]
        alpha_split = np.zeros(len(names), dtype=np.int64)
        alpha_split[z["alphabet"]] = z["split"]
    return frozenset(n for n, s in zip(names, alpha_split) if s == 0)


def _pool_from_split_file(name: str, path: Path, images: torch.Tensor, index: dict) -> ClassPool:
    chars, rots = [], []
    for line in path.read_text().split():
        alphabet, char_dir, rot_dir = line.split("/")
        chars.append(index[(alphabet, int(char_dir.removeprefix("character")))])
        rots.append(int(rot_dir.removeprefix("rot")) // 90)
    return _make_pool(name, images, torch.tensor(chars), torch.tensor(rots))


def _pool_from_chars(name: str, images: torch.Tensor, chars: list[int]) -> ClassPool:
    c = torch.tensor(chars).repeat_interleave(4)
    r = torch.arange(4).repeat(len(chars))
    return _make_pool(name, images, c, r)


def _make_pool(name: str, images: torch.Tensor, chars: torch.Tensor, rots: torch.Tensor) -> ClassPool:
    """Keep only the characters this split uses, renumbered, so the pool holds no foreign drawings."""
    used, local = torch.unique(chars, return_inverse=True)
    return ClassPool(name=name, images=images[used], char_of_class=local, rot_of_class=rots, global_char=used)
