"""Issue 25: the checkpoint a run leaves holds the weights its reported test metrics came from.

Tiny ProtoNet runs (3 episodes an epoch) stopped inside an epoch, by max_steps, by max_time (on a mocked
clock) and by SIGTERM; and a tiny Split MNIST run stopped inside a task. Each is then tested again from
its ``last.ckpt`` alone (``train=false``), and a stopped run resumed from it must end bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import TINY_PROTONET, compose_run, needs_mnist, needs_omniglot  # noqa: E402

from metalab.learners.meta.protonet import ProtoNet  # noqa: E402
from metalab.run import train  # noqa: E402

# 3 training episodes an epoch; more test episodes than TINY_PROTONET so that different weights show.
PROTONET = TINY_PROTONET + ["data.test_episodes=30", "trainer.check_val_every_n_epoch=1"]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _test_metrics(run_dir: Path) -> dict:
    return {k: v for k, v in _record(run_dir)["metrics"].items() if k.startswith("test/")}


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def _retest(run_dir: Path, out: Path, overrides: list[str]) -> dict:
    """Test ``run_dir``'s last.ckpt with the same experiment settings and train=false."""
    train(compose_run(out, overrides + ["train=false", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"]))
    return _test_metrics(out)


@needs_omniglot
def test_run_stopped_mid_epoch_by_max_steps_is_retested_identically_from_last_ckpt(tmp_path):
    run = tmp_path / "run"
    train(compose_run(run, PROTONET + ["trainer.max_steps=5"]))  # epoch 1, after its 2nd of 3 batches
    record = _record(run)
    assert record["stopped"]["reason"] == "max_steps" and record["stopped"]["global_step"] == 5
    assert record["checkpoint"] == {"path": "checkpoints/last.ckpt", "global_step": 5}
    retested = _retest(run, tmp_path / "retest", PROTONET)
    assert retested == _test_metrics(run)
    assert _record(tmp_path / "retest")["checkpoint"]["global_step"] == 5


class FakeClock:
    """``time.monotonic`` for Lightning's Timer that advances one second per training step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@needs_omniglot
def test_run_stopped_by_max_time_is_retested_identically_from_last_ckpt(tmp_path, monkeypatch):
    import lightning.pytorch.callbacks.timer as timer_module

    clock = FakeClock()
    monkeypatch.setattr(timer_module, "time", clock)
    original = ProtoNet.training_step

    def step_taking_one_second(self, batch, batch_idx):
        clock.now += 1.0
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ProtoNet, "training_step", step_taking_one_second)
    run = tmp_path / "run"
    train(compose_run(run, PROTONET + ["trainer.max_time=00:00:00:04"]))  # 4 "seconds": step 4, mid-epoch 1
    record = _record(run)
    assert record["stopped"]["reason"] == "max_time" and record["checkpoint"]["global_step"] == 4
    monkeypatch.setattr(ProtoNet, "training_step", original)
    assert _retest(run, tmp_path / "retest", PROTONET) == _test_metrics(run)


@needs_omniglot
def test_sigterm_stops_mid_epoch_and_resuming_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(compose_run(straight, PROTONET))  # 3 epochs x 3 steps

    original = ProtoNet.training_step

    def terminated_at_step_4(self, batch, batch_idx):
        if self.global_step == 4:  # epoch 1, its 2nd batch: the signal arrives while the step runs
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    stopped = tmp_path / "stopped"
    monkeypatch.setattr(ProtoNet, "training_step", terminated_at_step_4)
    train(compose_run(stopped, PROTONET))
    monkeypatch.setattr(ProtoNet, "training_step", original)
    record = _record(stopped)
    assert record["stopped"]["reason"] == "signal SIGTERM" and record["checkpoint"]["global_step"] == 5
    assert _retest(stopped, tmp_path / "retest", PROTONET) == _test_metrics(stopped)

    resumed = tmp_path / "resumed"
    train(compose_run(resumed, PROTONET + [f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}"]))
    assert _record(resumed)["checkpoint"]["global_step"] == _record(straight)["checkpoint"]["global_step"] == 9
    assert _test_metrics(resumed) == _test_metrics(straight)
    for key in ("val/acc", "train/loss"):
        assert _record(resumed)["metrics"][key] == _record(straight)["metrics"][key], key
    a, b = _weights(straight / "checkpoints" / "last.ckpt"), _weights(resumed / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_omniglot
def test_train_false_needs_a_checkpoint(tmp_path):
    from metalab.errors import ConfigError

    with pytest.raises(ConfigError, match="train=false is not allowed without ckpt_path"):
        train(compose_run(tmp_path, PROTONET + ["train=false"]))


@needs_omniglot
def test_fast_dev_run_record_says_so_and_is_strict_json(tmp_path):
    """debug=fdr: the record names fast_dev_run as what stopped training and why no checkpoint exists, and
    holds no NaN (one step cannot be timed), so strict JSON readers can parse it."""
    train(compose_run(tmp_path, PROTONET + ["debug=fdr"]))
    record = json.loads(
        (tmp_path / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}")
    )
    assert record["stopped"]["reason"].startswith("trainer.fast_dev_run=1")
    assert "fast_dev_run" in record["checkpoint"]["note"]


# Split MNIST on 40 training and 20 test images per task, 4 batches a task, a 16-16 MLP.
SPLIT_MNIST = [
    "+experiment=split_mnist/ewc",
    "data.train_examples_per_task=40",
    "data.test_examples_per_task=20",
    "model.hidden=[16,16]",
    "data.eval_batch_size=100",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.accelerator=cpu",
    "logger=csv",
    "learner.plot=false",
]


@needs_mnist
def test_continual_run_stopped_mid_task_is_retested_identically_from_last_ckpt(tmp_path):
    run = tmp_path / "run"
    train(compose_run(run, SPLIT_MNIST + ["trainer.max_steps=10"]))  # task 2, after 2 of its 4 batches
    record = _record(run)
    assert record["stopped"]["reason"] == "max_steps" and record["checkpoint"]["global_step"] == 10
    reported = _test_metrics(run)
    assert "test/class_il/acc" in reported and "test/task_il/acc" in reported
    assert _retest(run, tmp_path / "retest", SPLIT_MNIST) == reported
