"""docs/architecture.md's recipe "add a continual method", followed to the letter: one module with the method and one
config file, nothing else (no registry, no ``__all__``, no list of names in an error message), and the method
trains through ``train.py``'s path.

The two files are written into a temporary folder (a module on ``sys.path`` and a config folder on Hydra's
search path) instead of ``src/metalab/learners/continual/methods/`` and ``conf/learner/method/``, so the test
leaves the tree alone; that is the only difference from the recipe.
"""

from __future__ import annotations

import json

import pytest
from helpers import compose_run, data_available

METHOD = '''"""L2 to the weights each task started from: the "L2" baseline of Kirkpatrick et al. (2017, Fig. 2A), i.e.
EWC's penalty with the identity in place of the Fisher."""

from typing import Any

import torch

from metalab.learners.continual.methods.base import ContinualMethod


class L2Anchor(ContinualMethod):
    name = "l2_anchor"

    def __init__(self, strength: float = 1.0) -> None:
        self.strength = strength
        self.anchor: dict[str, torch.Tensor] | None = None

    def before_task(self, learner, task: int) -> None:
        if task > 0:
            self.anchor = {n: p.detach().clone() for n, p in learner.net.named_parameters()}

    def penalty(self, learner, batch, logits) -> torch.Tensor | None:
        if self.anchor is None:
            return None
        return self.strength * sum(((p - self.anchor[n]) ** 2).sum() for n, p in learner.net.named_parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, learner, state: dict[str, Any]) -> None:
        self.anchor = state["anchor"]
'''

CONFIG = """# L2 to the task-start weights (the recipe's example method)
_target_: l2_anchor.L2Anchor
strength: 0.5
"""


@pytest.mark.skipif(not data_available("mnist/mnist.npz"), reason="needs mnist/mnist.npz")
def test_a_method_in_one_module_and_one_config_trains_through_train_py(tmp_path, monkeypatch):
    from metalab.run import train

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "l2_anchor.py").write_text(METHOD)
    (tmp_path / "conf" / "learner" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "learner" / "method" / "l2_anchor.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    run = tmp_path / "run"
    train(
        compose_run(
            run,
            [
                "+experiment=split_mnist/finetune",
                "learner/method=l2_anchor",
                f"hydra.searchpath=[file://{tmp_path}/conf]",
                "data.n_tasks=2",
                "data.train_examples_per_task=40",
                "data.test_examples_per_task=20",
                "trainer.precision=32-true",
                "trainer.log_every_n_steps=1",
                "callbacks.progress_bar=null",
                "cpu_threads=1",
            ],
        )
    )
    record = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "continual_metrics.json").read_text())["method"] == "l2_anchor"
    assert record["metrics"]["train/penalty"] > 0  # the anchor of task 1 pulled on the weights
    assert len(record["metrics"]) > 0 and "test/class_il/acc" in record["metrics"]
