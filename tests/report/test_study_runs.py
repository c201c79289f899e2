"""A study end to end with real train.py runs (tiny ProtoNets): skip what is done, reproduce the report,
resume an interrupted run from its checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_helpers import TINY, omniglot_available, write_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
needs_omniglot = pytest.mark.skipif(not omniglot_available(), reason="shared/data/omniglot not found")


def report(study: Path, runs: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metalab", "report", str(study), "--runs-dir", str(runs), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def results_table(report_md: Path) -> str:
    text = report_md.read_text()
    return text[text.index("## Results") : text.index("## Environment")]


@needs_omniglot
def test_rerun_skips_done_runs_and_reproduces_the_report(tmp_path):
    study = write_study(tmp_path, ["omniglot/protonet_5w1s"])
    first = report(study, tmp_path / "runs", "--jobs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 runs, 0 already done, 2 to run (2 at a time)" in first.stdout
    for seed in (0, 1):  # one finished line per run with its headline score, then the summary
        assert f"finished protonet_5w1s seed {seed}: test/5w1s/acc " in first.stdout, first.stdout
    assert "2 run(s) finished now, 0 failed, 0 done before" in first.stdout
    report_md = study.parent / "tiny" / "report.md"
    table = report_md.read_text()
    assert "| protonet_5w1s | 5w1s % |" in table and "| 2 seeds |" in table
    assert (study.parent / "tiny" / "figures" / "tiny" / "curves.png").is_file()
    records = study.parent / "tiny" / "runs" / "tiny" / "protonet_5w1s" / "seed0"
    assert sorted(p.name for p in records.iterdir()) == [
        "config_resolved.yaml",
        "metrics.csv",
        "metrics.json",
        "run.json",
    ]
    assert str(tmp_path) not in (records / "config_resolved.yaml").read_text()  # no machine paths in records
    report_md.unlink()
    again = report(study, tmp_path / "runs")
    assert again.returncode == 0 and "2 runs, 2 already done, 0 to run" in again.stdout, again.stdout
    assert report_md.read_text() == table
    # the records alone (a fresh clone: no runs folder) give the same report and run nothing
    report_md.unlink()
    clone = report(study, tmp_path / "elsewhere")
    assert "2 already done, 0 to run" in clone.stdout and report_md.read_text() == table
    assert not (tmp_path / "elsewhere").exists()


@needs_omniglot
@pytest.mark.slow
def test_an_interrupted_run_is_resumed_not_restarted(tmp_path):
    overrides = [o for o in TINY if not o.startswith(("trainer.max_epochs", "data.train_episodes"))] + [
        "trainer.max_epochs=5",
        "data.train_episodes=300",
    ]
    reference_study = write_study(tmp_path / "reference", ["omniglot/protonet_5w1s"], overrides, seeds=[0])
    assert report(reference_study, tmp_path / "runs_a").returncode == 0
    study = write_study(tmp_path / "interrupted", ["omniglot/protonet_5w1s"], overrides, seeds=[0])
    runs = tmp_path / "runs_b"
    command = [sys.executable, "-m", "metalab", "report", str(study), "--runs-dir", str(runs)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = runs / "tiny" / "tiny" / "protonet_5w1s" / "seed0"
    deadline = time.time() + 900
    while not _epochs_done(run_dir) >= 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # the study stops its run: it saves last.ckpt after its step and tests
    output = process.communicate(timeout=120)[0]
    if (run_dir / "metrics.json").exists():  # the signal's run tested what it had: not the study's result
        stopped = json.loads((run_dir / "metrics.json").read_text()).get("stopped")
        assert stopped and stopped["reason"].startswith("signal"), (stopped, output)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file(), output
    resumed = report(study, runs)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming protonet_5w1s seed 0" in resumed.stdout
    info = json.loads((run_dir / "run.json").read_text())
    assert info["resumed_from_checkpoint"] is True
    ours = json.loads((run_dir / "metrics.json").read_text())
    theirs = json.loads(
        (runs_a_dir := tmp_path / "runs_a" / "tiny" / "tiny" / "protonet_5w1s" / "seed0" / "metrics.json").read_text()
    )
    test_keys = sorted(k for k in theirs["metrics"] if k.startswith("test/"))
    assert test_keys and {k: ours["metrics"][k] for k in test_keys} == {k: theirs["metrics"][k] for k in test_keys}, (
        runs_a_dir
    )
    assert ours["global_step"] == theirs["global_step"]


def _epochs_done(run_dir: Path) -> int:
    """Epochs the run has entered past the first, from its CSV log (flushed as training goes; the
    checkpoint is written when training ends, so it cannot tell how far a live run is)."""
    import csv

    try:
        with (run_dir / "csv" / "metrics.csv").open() as rows:
            return max((int(float(r["epoch"])) for r in csv.DictReader(rows) if r.get("epoch")), default=-1) + 1
    except (OSError, ValueError, KeyError):
        return 0
