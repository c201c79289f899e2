"""The same seed gives the same metrics; a different seed gives different ones."""

from __future__ import annotations

import json

from continual.helpers import run_stream
from metalab.learners.continual import EWC, DERPlusPlus


def _record(tmp_path, method_factory, seed):
    run_stream(method_factory(), tmp_path, seed=seed)
    return json.loads((tmp_path / "continual_metrics.json").read_text())


def test_same_seed_twice_same_metrics(tmp_path):
    for factory in (
        lambda: DERPlusPlus(buffer_size=30, replay_batch_size=10, seed=0),
        lambda: EWC(ewc_lambda=2.0, sampled_labels=True, seed=0),
    ):
        a = _record(tmp_path / "a", factory, seed=0)
        b = _record(tmp_path / "b", factory, seed=0)
        c = _record(tmp_path / "c", factory, seed=1)
        assert a == b
        assert a["class_il"]["R"] != c["class_il"]["R"]
