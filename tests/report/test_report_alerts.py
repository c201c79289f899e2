"""The study report shows the self-diagnosis alerts of its runs (issue 35), and nothing when there are none."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metalab.report import collect, render
from metalab.report.identity import planned_yaml
from metalab.report.study import compose_run, load_study

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
        (folder / "config_resolved.yaml").write_text(planned_yaml(compose_run(study, run)))  # today's config
        (folder / "metrics.json").write_text(
            json.dumps({"metrics": {"test/5w1s/acc": 90.0}, "global_step": 10, "alerts": alerts_by_seed[run.seed]})
        )
    return study


def test_alerts_get_a_section_with_one_row_each(tmp_path):
    study = study_with_alerts(tmp_path, {0: [], 1: [ALERT]})
    text = render.render_report(study, collect.collect(study), "metalab report x")
    assert "## Diagnosis alerts" in text
    row = (
        "| protonet_5w1s | 1 | 31 | non-finite loss | loss nan on 1 mini-batch(es) from step 30 | skipped the step "
        "| yes |"
    )
    assert row in text
    section = text.split("## Diagnosis alerts")[1].split("\n## ")[0]
    assert sum(line.startswith("| protonet_5w1s |") for line in section.splitlines()) == 1  # one alert, one row


def test_no_alerts_no_section(tmp_path):
    study = study_with_alerts(tmp_path, {0: [], 1: []})
    assert "Diagnosis alerts" not in render.render_report(study, collect.collect(study), "metalab report x")


REPORTED = {
    "step": 40,
    "kind": "throughput collapse",
    "detail": "seconds per step: 12x its best",
    "action": "reported (no automatic remedy)",
    "changed_training": False,
}


def results_row(text: str) -> str:
    return next(line for line in text.split("## Results")[1].splitlines() if line.startswith("| protonet_5w1s"))


def test_a_run_the_diagnosis_acted_on_marks_its_row_healed_and_a_report_alone_does_not(tmp_path):
    """The fingerprint ignores the diagnosis settings only because an action is never hidden: a row with a run
    whose training an alert changed is marked HEALED, naming the seed; an alert that only reported is listed
    in the alerts section but leaves the row clean."""
    healed = study_with_alerts(tmp_path / "healed", {0: [REPORTED], 1: [ALERT]})
    collected = collect.collect(healed)
    text = render.render_report(healed, collected, "metalab report x")
    assert "HEALED: the diagnosis acted in training, seed 1;" in results_row(text)
    assert [r.run.seed for r in collected.records["protonet_5w1s"] if r.healed] == [1]
    assert "| throughput collapse | seconds per step: 12x its best | reported (no automatic remedy) | no |" in text
    assert "HEALED" in render.summary_table(healed, collected, tmp_path)
    clean = study_with_alerts(tmp_path / "clean", {0: [REPORTED], 1: []})
    assert "HEALED" not in results_row(render.render_report(clean, collect.collect(clean), "metalab report x"))


def test_healed_actions_count_every_action_but_a_report_and_old_alerts_without_the_flag():
    old_style = {k: v for k, v in ALERT.items()}  # alerts written before changed_training existed: count them
    assert collect.healed_actions([old_style, REPORTED]) == ["step 31: non-finite loss -> skipped the step"]
    assert collect.healed_actions(None) == [] and collect.healed_actions([]) == []
