"""Run identity: a record knows the config that made it, and a study or table built from a record made
by another config says so (issue 31)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metalab.report import collect
from metalab.report.identity import fingerprint_yaml, identity, planned_yaml
from metalab.report.runner import run_state
from metalab.report.study import compose_run, load_study
from metalab.report.tables import refresh

ROOT = Path(__file__).resolve().parents[2]
from study_helpers import omniglot_available, write_study  # noqa: E402

BASE = {
    "seed": 0,
    "cpu_threads": 1,
    "paths": {"output_dir": "/a/run"},
    "task_name": "x",
    "trainer": {"_target_": "lightning.Trainer", "max_epochs": 3, "default_root_dir": "/a/run"},
    "data": {"pools": {"data_dir": "/data"}, "train_episodes": 10},
    "callbacks": {"progress_bar": {"refresh_rate": 10}, "time_budget": {"_target_": "x.Budget"}},
}


def fingerprint(config: dict) -> str:
    return fingerprint_yaml(OmegaConf.to_yaml(OmegaConf.create(config)))


def changed(**updates: object) -> dict:
    config = json.loads(json.dumps(BASE))
    for dotted, value in updates.items():
        *parents, last = dotted.split("__")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def test_fingerprint_ignores_where_and_how_fast_but_not_what_is_computed():
    same = [
        changed(paths__output_dir="/elsewhere"),
        changed(cpu_threads=2),
        changed(task_name="y"),
        changed(trainer__default_root_dir="/b"),
        changed(data__pools__data_dir="/other/data"),
        changed(callbacks__progress_bar__refresh_rate=0),
    ]
    assert {fingerprint(c) for c in same} == {fingerprint(BASE)}
    different = [
        changed(seed=1),
        changed(data__train_episodes=11),
        changed(trainer__max_epochs=4),
        changed(callbacks__time_budget__margin=0.5),
        changed(model={"hidden": 8}),
    ]
    assert len({fingerprint(c) for c in different} | {fingerprint(BASE)}) == len(different) + 1


def test_a_key_spelled_out_at_its_default_is_the_same_call_and_any_other_value_is_not():
    # lightning.Trainer(max_steps=-1) is what Trainer() does: a newer config that writes it out computes the same
    assert fingerprint(changed(trainer__max_steps=-1)) == fingerprint(BASE)
    assert fingerprint(changed(trainer__max_steps=100)) != fingerprint(BASE)
    assert "max_steps" not in identity(changed(trainer__max_steps=-1))["trainer"]


def test_a_record_made_by_another_experiment_file_is_stale_and_left_out(tmp_path):
    study, conf = _repository_with_records(tmp_path)
    assert [run_state(study, r, tmp_path / "runs") for r in study.runs] == ["recorded", "recorded"]
    _edit_experiment(conf, "learner.optimizer.lr", 0.002)
    again = load_study(study.path)
    assert [run_state(again, r, tmp_path / "runs") for r in again.runs] == ["stale", "stale"]
    collected = collect.collect(again)
    assert [r.seed for r in collected.stale] == [0, 1] and not collect.rows(collected)
    kept = collect.collect(load_study(study.path), keep_stale=True)
    assert [row.shown_label for row in collect.rows(kept)] == ["protonet_5w1s (STALE: made by another config)"]


def test_tables_check_fails_naming_the_runs_an_experiment_change_made_stale(tmp_path):
    study, conf = _repository_with_records(tmp_path)
    doc = tmp_path / "README.md"
    doc.write_text("# results\n<!-- metalab:study study=experiments/tiny.yaml -->\n<!-- metalab:end -->\n")
    assert refresh(root=tmp_path) == [doc] and "| protonet_5w1s | 5w1s % |" in doc.read_text()
    check = [sys.executable, "-m", "metalab", "tables", "--check"]
    assert subprocess.run(check, cwd=tmp_path, capture_output=True, text=True).returncode == 0
    _edit_experiment(conf, "learner.optimizer.lr", 0.002)
    result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "stale: README.md" in result.stderr, result.stderr
    assert "stale: protonet_5w1s seed 0, protonet_5w1s seed 1" in result.stderr, result.stderr
    subprocess.run([sys.executable, "-m", "metalab", "tables"], cwd=tmp_path, check=True, capture_output=True)
    text = doc.read_text()
    assert "| protonet_5w1s | 5w1s % |" not in text and "Left out as stale" in text


@pytest.mark.skipif(not omniglot_available(), reason="shared/data/omniglot not found")
def test_report_lists_stale_runs_and_runs_them_again(tmp_path):
    study, conf = _repository_with_records(tmp_path, tiny=True)
    _edit_experiment(conf, "learner.optimizer.lr", 0.002)
    command = [
        sys.executable,
        "-m",
        "metalab",
        "report",
        str(study.path),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seeds",
        "0",
    ]
    kept = subprocess.run([*command, "--keep-stale"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert kept.returncode == 0 and "0 to run" in kept.stdout and "STALE" in (study.folder / "report.md").read_text()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "stale (recorded by a config other than the study's now), to run again: protonet_5w1s seed 0" in result.stdout
    )
    assert "1 runs, 0 already done, 1 to run" in result.stdout
    fresh = load_study(study.path, seeds=[0])
    assert run_state(fresh, fresh.runs[0], tmp_path / "runs") == "recorded"
    metrics = json.loads((fresh.records_dir(fresh.runs[0]) / "metrics.json").read_text())
    assert metrics["metrics"]["test/5w1s/acc"] != 50.0 and metrics["fingerprint"] and "commit" in metrics["code"]


def _repository_with_records(tmp_path: Path, tiny: bool = False):
    """A repository (its own conf/) with a one-experiment study whose records were made by its config."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "train.py").write_text((ROOT / "train.py").read_text())
    from study_helpers import TINY

    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], TINY if tiny else None))
    for run in study.runs:
        folder = study.records_dir(run)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"metrics": {"test/5w1s/acc": 50.0}, "seed": run.seed}))
        (folder / "run.json").write_text(json.dumps({"key": run.key, "threads": 1, "cpu": "X"}))
        (folder / "config_resolved.yaml").write_text(planned_yaml(compose_run(study, run)))
    return study, tmp_path / "conf"


def _edit_experiment(conf: Path, key: str, value: object) -> None:
    path = conf / "experiment" / "omniglot" / "protonet_5w1s.yaml"
    config = OmegaConf.load(path)
    OmegaConf.update(config, key, value)
    path.write_text("# @package _global_\n" + OmegaConf.to_yaml(config))
