"""NAS runs end to end through train.py's code path: the genotype lands in metrics.json with a picture,
a resumed DARTS search ends where the uninterrupted one does, and a bad genotype is one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_run, data_available

from metalab.run import train

ROOT = Path(__file__).resolve().parents[2]
needs_cifar = pytest.mark.skipif(not data_available("cifar10/cifar10.npz"), reason="CIFAR-10 data file not found")
TINY_DARTS = [
    "+experiment=nas/darts",
    "data.search_examples=96",
    "data.batch_size=16",
    "model.channels=4",
    "callbacks.progress_bar.refresh_rate=0",
    "logger=none",
]


def run(tmp: Path, overrides: list[str]) -> dict:
    cfg = compose_run(tmp, overrides)
    train(cfg)
    return json.loads((tmp / "metrics.json").read_text())


@needs_cifar
@pytest.mark.slow
def test_a_killed_darts_search_resumes_to_the_uninterrupted_result(tmp_path):
    """2 epochs of 3 steps; each step is 2 optimiser steps (architecture, weights), so global step 8 is inside
    the second epoch, after the checkpoint that ended the first."""
    whole = run(tmp_path / "whole", [*TINY_DARTS, "trainer.max_epochs=2"])
    assert (tmp_path / "whole" / "cell.png").is_file() and whole["genotype"].count("~") == 6
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(
            tmp_path / "killed",
            [
                *TINY_DARTS,
                "trainer.max_epochs=2",
                "+callbacks.crash._target_=nas_helpers.CrashAtStep",
                "+callbacks.crash.step=8",
            ],
        )
    resumed = run(
        tmp_path / "resumed",
        [*TINY_DARTS, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'killed' / 'checkpoints' / 'last.ckpt'}"],
    )
    assert resumed["operation_weights"] == whole["operation_weights"]
    assert resumed["genotype"] == whole["genotype"] and resumed["genotype_history"] == whole["genotype_history"]
    final = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    again = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.parametrize(
    "genotype, expected",
    [
        (
            "'|conv_5x5~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|'",
            "error: unknown operation 'conv_5x5' on edge 0->1; the operations are: none, skip_connect,",
        ),
        ("resnet", "error: genotype 'resnet' does not parse: expected NAS-Bench-201's form"),
        (
            "'|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|'",
            "error: genotype '|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|' "
            "does not fit the space: it has 2 node groups, a cell has 3",
        ),
    ],
)
def test_a_bad_genotype_on_the_command_line_is_one_error_line(genotype, expected, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "+experiment=nas/retrain", f"genotype={genotype}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(expected), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
