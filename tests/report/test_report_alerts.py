"""The study report shows the self-diagnosis alerts of its runs (issue 35), and nothing when there are none."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metalab.report import collect, render
from metalab.report.study import load_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_helpers import write_study  # noqa: E402

ALERT = {
    "step": 31,
    "kind": "non-finite loss",
    "detail": "loss nan on 1 mini-batch(es) from step 30",
    "action": "skipped the step",
}


def study_with_alerts(tmp_path: Path, alerts_by_seed: dict[int, list]) -> object:
    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"]))
    for run in study.runs:
        folder = study.records_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(
            json.dumps({"metrics": {"test/5w1s/acc": 90.0}, "global_step": 10, "alerts": alerts_by_seed[run.seed]})
        )
    return study


def test_alerts_get_a_section_with_one_row_each(tmp_path):
    study = study_with_alerts(tmp_path, {0: [], 1: [ALERT]})
    text = render.render_report(study, collect.collect(study), "metalab report x")
    assert "## Diagnosis alerts" in text
    row = "| protonet_5w1s | 1 | 31 | non-finite loss | loss nan on 1 mini-batch(es) from step 30 | skipped the step |"
    assert row in text
    section = text.split("## Diagnosis alerts")[1].split("\n## ")[0]
    assert sum(line.startswith("| protonet_5w1s |") for line in section.splitlines()) == 1  # one alert, one row


def test_no_alerts_no_section(tmp_path):
    study = study_with_alerts(tmp_path, {0: [], 1: []})
    assert "Diagnosis alerts" not in render.render_report(study, collect.collect(study), "metalab report x")
