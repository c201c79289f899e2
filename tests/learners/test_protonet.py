"""ProtoNet math, and whole tiny runs: reproducible, resumable, with a metrics.json."""

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_PROTONET, compose_run, needs_omniglot  # noqa: E402

from metalab.errors import NumericalError  # noqa: E402
from metalab.learners.meta.protonet import ProtoNet, squared_euclidean  # noqa: E402
from metalab.run import train  # noqa: E402


def test_squared_euclidean_matches_cdist():
    q, p = torch.randn(3, 7, 16, dtype=torch.float64), torch.randn(3, 5, 16, dtype=torch.float64)
    assert torch.allclose(squared_euclidean(q, p), torch.cdist(q, p) ** 2, atol=1e-10)


def test_logits_are_distances_to_support_means():
    """With an identity backbone the logits are exactly -||q - mean(support of class)||^2."""
    learner = ProtoNet(torch.nn.Flatten(), optimizer=torch.optim.Adam, channels_last=False)
    support = torch.randn(2, 3 * 2, 1, 2, 2)  # 2 tasks, 3 way, 2 shot
    query = torch.randn(2, 3 * 4, 1, 2, 2)
    labels = torch.arange(3).repeat_interleave(2).expand(2, -1)
    batch = {
        "support": support,
        "support_labels": labels,
        "query": query,
        "query_labels": torch.arange(3).repeat_interleave(4).expand(2, -1),
    }
    logits = learner.query_logits(batch)
    protos = support.flatten(2).view(2, 3, 2, 4).mean(2)
    expected = -((query.flatten(2)[:, :, None] - protos[:, None]) ** 2).sum(-1)
    assert logits.shape == (2, 12, 3)
    assert torch.allclose(logits, expected, atol=1e-5)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@needs_omniglot
def test_same_seed_same_metrics_and_run_record(tmp_path):
    a = train(compose_run(tmp_path / "a", TINY_PROTONET))
    train(compose_run(tmp_path / "b", TINY_PROTONET))
    ma, mb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert a is None and ma["test/5w1s/acc"] == mb["test/5w1s/acc"]
    assert ma["val/acc"] == mb["val/acc"] and ma["train/loss"] == mb["train/loss"]
    assert ma["test/5w1s/episodes"] == 6
    assert (tmp_path / "a" / "config_resolved.yaml").is_file()
    c = train(compose_run(tmp_path / "c", TINY_PROTONET + ["seed=1", "optimized_metric=test/5w1s/acc"]))
    assert c == _metrics(tmp_path / "c")["test/5w1s/acc"]
    assert _metrics(tmp_path / "c")["train/loss"] != ma["train/loss"]


class Crash(RuntimeError):
    pass


@needs_omniglot
def test_killed_run_resumed_from_last_ends_like_uninterrupted(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(compose_run(straight, TINY_PROTONET))

    original = ProtoNet.training_step

    def crash_in_last_epoch(self, batch, batch_idx):
        if self.current_epoch == 2 and batch_idx == 1:
            raise Crash("killed")
        return original(self, batch, batch_idx)

    killed = tmp_path / "killed"
    monkeypatch.setattr(ProtoNet, "training_step", crash_in_last_epoch)
    with pytest.raises(Crash):
        train(compose_run(killed, TINY_PROTONET))
    monkeypatch.setattr(ProtoNet, "training_step", original)
    assert (killed / "checkpoints" / "last.ckpt").is_file()

    resumed = tmp_path / "resumed"
    train(compose_run(resumed, TINY_PROTONET + [f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}"]))
    m_straight, m_resumed = _metrics(straight), _metrics(resumed)
    for key in ("test/5w1s/acc", "val/acc", "train/loss"):
        assert m_resumed[key] == m_straight[key], key


@needs_omniglot
def test_nan_loss_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(ProtoNet, "query_logits", lambda self, batch: torch.full((1, 10, 5), float("nan")))
    with pytest.raises(NumericalError, match=r"training loss became nan at step 0"):
        train(compose_run(tmp_path, [*TINY_PROTONET, "diagnosis=off"]))


@needs_omniglot
def test_with_diagnosis_a_loss_that_is_always_nan_stops_training_with_the_reason(tmp_path, monkeypatch):
    """Skipped steps that keep coming are rolled back, and when no snapshot is older, training stops early."""
    monkeypatch.setattr(ProtoNet, "query_logits", lambda self, batch: torch.full((1, 10, 5), float("nan")))
    train(compose_run(tmp_path, [*TINY_PROTONET, "test=false"]))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["stopped"]["reason"].startswith("diagnosis: non-finite loss at step")
    assert record["alerts"][0]["action"].startswith("skipped the step")
    assert record["alerts"][-1]["action"] == "stopped training early"


def test_bf16_autocast_keeps_distances_in_fp32():
    """Under bf16 autocast only the backbone runs in bf16: the logits come out fp32, and near the
    fp32 logits (a bf16 matmul for the distances would be off by whole units at these norms)."""
    torch.manual_seed(0)
    from metalab.models.conv4 import Conv4

    learner = ProtoNet(Conv4(hidden=16), optimizer=torch.optim.Adam)
    learner.backbone.train()
    batch = {
        "support": torch.rand(2, 5, 1, 28, 28),
        "support_labels": torch.arange(5).expand(2, -1),
        "query": torch.rand(2, 10, 1, 28, 28),
        "query_labels": torch.arange(5).repeat(2).expand(2, -1),
    }
    exact = learner.query_logits(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = learner.query_logits(batch)
    assert mixed.dtype == torch.float32
    assert (mixed - exact).abs().max() <= 0.05 * exact.abs().max()
    assert (mixed.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.9


@needs_omniglot
def test_tiny_bf16_mixed_run_is_reproducible(tmp_path):
    overrides = TINY_PROTONET + ["trainer.precision=bf16-mixed"]
    train(compose_run(tmp_path / "a", overrides))
    train(compose_run(tmp_path / "b", overrides))
    assert _metrics(tmp_path / "a")["test/5w1s/acc"] == _metrics(tmp_path / "b")["test/5w1s/acc"]
