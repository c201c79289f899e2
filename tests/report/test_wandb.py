"""logger=wandb for real, offline: a tiny study run writes a W&B run file with the config and the
metrics, grouped and tagged by its study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import TINY, omniglot_available, write_study  # noqa: E402
from wandb_records import summary_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not omniglot_available(), reason="shared/data/omniglot not found")
def test_study_run_logs_offline_to_wandb_with_config_metrics_group_and_tags(tmp_path):
    pytest.importorskip("wandb")
    study = write_study(
        tmp_path, ["omniglot/protonet_5w1s"], TINY + ["logger=wandb", "trainer.log_every_n_steps=1"], seeds=[0]
    )
    env = {**__import__("os").environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "metalab", "report", str(study), "--runs-dir", str(tmp_path / "runs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny" / "tiny" / "protonet_5w1s" / "seed0"
    [wandb_file] = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    logged = summary_of(wandb_file)
    assert logged["group"] == "tiny-tiny" and logged["tags"] == ["tiny", "tiny", "protonet_5w1s"]
    assert logged["config"]["seed"] == 0 and logged["config"]["data"]["train"]["way"] == 5
    assert logged["config"]["learner"]["_target_"].endswith("ProtoNet")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert logged["history"]["test/5w1s/acc"] == pytest.approx(metrics["test/5w1s/acc"])
    assert "train/loss" in logged["history"]
