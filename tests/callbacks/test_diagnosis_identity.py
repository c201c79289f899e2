"""A run in which the self-diagnosis takes no action is bit for bit the run without it.

This is what lets the run fingerprint leave the ``diagnosis`` settings out (``metalab.report.identity``):
the callback reads losses, gradient norms, inputs and learning rates and copies state for its snapshots,
but must draw no random number, reorder no batch and change no value. Each test trains the same tiny run
with diagnosis off and on (every check and a snapshot on every batch, the most it ever does while
watching), asserts that the diagnosis raised no alert, and compares every weight, buffer, optimiser
moment, replay-buffer entry, per-batch loss, test metric and random-number-generator state exactly.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from continual.helpers import run_stream
from helpers import TINY_PROTONET, compose_run, needs_omniglot

from metalab.callbacks.diagnosis import build_diagnosis
from metalab.learners.continual import ExperienceReplay
from metalab.run import train

# every check on every batch and a snapshot after each: the callback's most intrusive watching
WATCH_ALL = {"gradient_explosion": {"every": 1}, "rollback": {"snapshot_every": 1}}
WATCH_ALL_OVERRIDES = ["diagnosis.gradient_explosion.every=1", "diagnosis.rollback.snapshot_every=1"]
TIMING = re.compile(r"seconds|_per_s$")  # wall-clock figures: the only metrics allowed to differ


class LossTrace(L.Callback):
    """Every training batch's loss, as Lightning hands it to the callbacks."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def generator_states() -> tuple[bytes, Any, Any]:
    """torch's, numpy's and Python's global generator states (what a stray random draw would move)."""
    return bytes(torch.get_rng_state().numpy()), np.random.get_state()[1].tobytes(), random.getstate()


def assert_same_tensors(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{what}: {key} differs"
        elif isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key], f"{what}.{key}")
        else:
            assert a[key] == b[key], f"{what}: {key} differs"


def test_continual_replay_run_with_diagnosis_watching_equals_the_run_without(tmp_path):
    """Experience replay draws from the global generator for its reservoir and its replay batches, and its
    buffer is in every snapshot (``on_save_checkpoint``): a stray draw or a changed value shows here."""
    runs = {}
    for name, extra in (("off", []), ("on", [build_diagnosis(**WATCH_ALL)])):
        trace = LossTrace()
        learner, metrics = run_stream(ExperienceReplay(buffer_size=50), tmp_path / name, callbacks=[trace, *extra])
        runs[name] = (learner, metrics, trace.losses, generator_states(), extra)
    (off, off_metrics, off_losses, off_rng, _), (on, on_metrics, on_losses, on_rng, (healer,)) = runs["off"], runs["on"]
    assert healer.alerts == [] and healer.batches_seen == len(on_losses) > 20  # it watched every batch, never acted
    assert on_losses == off_losses
    assert_same_tensors(on.state_dict(), off.state_dict(), "learner")  # weights and accuracy matrices
    assert_same_tensors(on.method.state_dict(), off.method.state_dict(), "replay buffer")
    assert_same_tensors(on.optimizers().state_dict()["state"], off.optimizers().state_dict()["state"], "optimiser")
    assert on_metrics == off_metrics and on_rng == off_rng


@needs_omniglot
def test_protonet_run_through_train_with_diagnosis_equals_diagnosis_off(tmp_path):
    """The whole ``train`` path (the callback built from ``conf/diagnosis/``, batch norm, Adam): the same
    metrics, the same final checkpoint weights and optimiser state, and the same fingerprint."""
    tiny = [*TINY_PROTONET, "trainer.precision=32-true"]
    train(compose_run(tmp_path / "off", [*tiny, "diagnosis=off"]))
    train(compose_run(tmp_path / "on", [*tiny, *WATCH_ALL_OVERRIDES]))
    records = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("off", "on")}
    assert records["on"]["alerts"] == [] and records["on"]["diagnosis"]["batches"] > 0
    assert "alerts" not in records["off"]
    off, on = ({k: v for k, v in records[n]["metrics"].items() if not TIMING.search(k)} for n in ("off", "on"))
    assert on == off and any(k.startswith("test/") for k in on)
    assert records["on"]["fingerprint"] == records["off"]["fingerprint"]
    checkpoints = {n: torch.load(_last_checkpoint(tmp_path / n), weights_only=False) for n in ("off", "on")}
    assert_same_tensors(checkpoints["on"]["state_dict"], checkpoints["off"]["state_dict"], "weights")
    for a, b in zip(checkpoints["on"]["optimizer_states"], checkpoints["off"]["optimizer_states"]):
        assert_same_tensors(a["state"], b["state"], "optimiser")


def _last_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("**/last.ckpt"))
    if not found:
        pytest.fail(f"no last.ckpt under {run_dir}")
    return found[0]
