"""Compose the real Hydra config for tiny end-to-end runs inside tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"

TINY_PROTONET = [
    "data.train={way:5,shot:1,query:2}",
    "data.val={way:5,shot:1,query:2}",
    "data.test=[5w1s]",
    "data.test_query=2",
    "data.train_episodes=3",
    "data.val_episodes=4",
    "data.test_episodes=6",
    "data.eval_tasks_per_batch=3",
    "model.hidden=8",
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar.refresh_rate=0",
]


def compose_run(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config ``train.py`` would see, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
    return cfg


def data_available(relpath: str = "omniglot/omniglot.npz") -> bool:
    """Whether a data file is in any folder the data loaders search (tests that need it skip otherwise)."""
    from metalab.data.files import candidate_dirs

    return any((d / relpath).is_file() for d in candidate_dirs())


needs_omniglot = pytest.mark.skipif(not data_available(), reason="shared/data/omniglot not found")
needs_mnist = pytest.mark.skipif(not data_available("mnist/mnist.npz"), reason="shared/data/mnist not found")
