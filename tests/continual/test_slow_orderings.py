"""Slow (``pytest -m slow``): the real Split MNIST experiments keep the orderings issue 4 expects.

Runs ``+experiment=split_mnist/<m>`` through ``metalab.run.train`` exactly as ``train.py`` does (full data,
1 epoch per task, seed 0) and checks class-IL joint > DER++ > ER > fine-tune and zero task-IL forgetting
for progressive networks. About two minutes on one core.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from continual.helpers import REPO
from metalab.run import train


def _run(name: str, tmp_path) -> dict:
    out = tmp_path / name
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"+experiment=split_mnist/{name}",
                "seed=0",
                "cpu_threads=1",
                f"paths.output_dir={out}",
                "callbacks.progress_bar.refresh_rate=0",
            ],
        )
    train(cfg)
    return json.loads((out / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_split_mnist_orderings(tmp_path):
    acc = {m: _run(m, tmp_path)["test/class_il/acc"] for m in ("joint", "derpp_500", "er_500", "finetune")}
    assert acc["joint"] > acc["derpp_500"] > acc["er_500"] > acc["finetune"], acc
    assert _run("progressive", tmp_path)["test/task_il/forgetting"] == 0.0
