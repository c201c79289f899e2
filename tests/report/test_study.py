"""Studies: the plan, the checks before anything runs, what the report computes from records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metalab.errors import ConfigError
from metalab.report import collect, render
from metalab.report.identity import planned_yaml
from metalab.report.runner import run_state
from metalab.report.study import check_runs, compose_run, load_study

ROOT = Path(__file__).resolve().parents[2]
from study_helpers import TINY, write_study  # noqa: E402


def metalab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metalab", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def test_plan_crosses_experiments_variants_and_seeds(tmp_path):
    path = write_study(
        tmp_path,
        [
            "omniglot/protonet_5w1s",
            {"experiment": "omniglot/maml_5w1s", "label": "maml", "overrides": ["learner.inner_steps=2"]},
        ],
        overrides=["trainer.max_epochs=1"],
        variants={"a": [], "b": ["seed=5"]},
    )
    study = load_study(path)
    assert study.budget == "tiny" and study.labels == ["protonet_5w1s (a)", "protonet_5w1s (b)", "maml (a)", "maml (b)"]
    assert len(study.runs) == 8 and {r.seed for r in study.runs} == {0, 1}
    maml = next(r for r in study.runs if r.label == "maml (b)")
    assert maml.overrides == ("trainer.max_epochs=1", "seed=5", "learner.inner_steps=2")
    assert len({r.key for r in study.runs}) == 8  # every run its own folder
    assert [r.seed for r in load_study(path, "other").runs] == [3, 3, 3, 3]


@pytest.mark.parametrize(
    "experiments, overrides, budget, message",
    [
        (["omniglot/nope"], [], None, "study tiny, run nope: unknown experiment 'omniglot/nope'; available: "),
        (
            ["omniglot/protonet_5w1s"],
            ["data.n_wya=3"],
            None,
            "study tiny, run protonet_5w1s: Could not override 'data.n_wya'",
        ),
        ([{"experiment": "omniglot/protonet_5w1s", "overides": []}], [], None, "unknown key 'overides'"),
        (["omniglot/protonet_5w1s"], [], "huge", "--budget 'huge' is not allowed: study tiny has budgets tiny, other"),
    ],
)
def test_bad_studies_stop_before_anything_runs(tmp_path, experiments, overrides, budget, message):
    path = write_study(tmp_path, experiments, overrides)
    with pytest.raises(ConfigError) as error:
        check_runs(load_study(path, budget))
    assert str(error.value).startswith(message) or message in str(error.value), str(error.value)


def test_bad_study_on_the_command_line_is_one_error_line_and_touches_nothing(tmp_path):
    good = write_study(tmp_path, ["omniglot/protonet_5w1s"])
    study = load_study(good)
    record = study.records_dir(study.runs[0]) / "metrics.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"metrics": {"test/5w1s/acc": 50.0}}')
    write_study(tmp_path, ["omniglot/protonet_5w1s", "omniglot/nope"])
    result = metalab("report", str(good), "--runs-dir", str(tmp_path / "runs"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "unknown experiment 'omniglot/nope'" in errors[0], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert record.read_text() == '{"metrics": {"test/5w1s/acc": 50.0}}' and not (tmp_path / "runs").exists()


def fake_records(tmp_path: Path, values: dict[int, float | str], ci: float = 3.0) -> object:
    """A study whose runs have records as train.py writes them (the collector's input, made by hand)."""
    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"]))
    for run in study.runs:
        folder = study.records_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        value = values[run.seed]
        text = (
            value
            if isinstance(value, str)
            else json.dumps(
                {
                    "metrics": {"test/5w1s/acc": value, "test/5w1s/acc_ci95": ci, "test/5w1s/episodes": 600},
                    "targets": {"5w1s": {"paper": 98.8, "goal": 98.5, "source": "Snell"}},
                    "global_step": 10,
                    "seed": run.seed,
                }
            )
        )
        (folder / "metrics.json").write_text(text)
        (folder / "run.json").write_text(json.dumps({"key": run.key, "threads": 1, "wall_seconds": 12.0, "cpu": "X"}))
        (folder / "config_resolved.yaml").write_text(planned_yaml(compose_run(study, run)))  # made by today's config
    return study


def test_mean_and_t_interval_over_seeds_and_goal_verdicts(tmp_path):
    study = fake_records(tmp_path, {0: 98.0, 1: 99.2})
    [row] = collect.rows(collect.collect(study))
    # two seeds: t(0.975, 1) = 12.706 times the standard error |a - b| / 2
    assert row.estimate.mean == pytest.approx(98.6) and row.estimate.ci95 == pytest.approx(12.706 * 0.6)
    assert row.estimate.over == "2 seeds" and row.met == "met"
    assert collect.verdict(98.49, 98.5, "acc") == "not met" and collect.verdict(0.09, 0.1, "mse") == "met"
    assert collect.verdict(50.0, None, "acc") == "no goal"


def test_goals_are_the_experiment_files_now_not_the_ones_recorded(tmp_path):
    """Targets are left out of a run's identity, so an edited goal applies to the records already made: the
    row compares with the experiment file's `targets:` now (protonet_5w1s: paper 98.8, goal 98.5)."""
    study = fake_records(tmp_path, {0: 98.0, 1: 98.2})
    for run in study.runs:
        record = study.records_dir(run) / "metrics.json"
        data = json.loads(record.read_text())
        data["targets"] = {"5w1s": {"paper": 1.0, "goal": 90.0, "source": "an older experiment file"}}
        record.write_text(json.dumps(data))
    [row] = collect.rows(collect.collect(study))
    assert (row.paper, row.goal, row.met) == (98.8, 98.5, "not met")


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 10, 29):
        assert collect.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4)


def test_one_seed_reports_the_episode_interval(tmp_path):
    study = fake_records(tmp_path, {0: 97.0, 1: 98.0})
    study.runs = study.runs[:1]
    [row] = collect.rows(collect.collect(study))
    assert (row.estimate.mean, row.estimate.ci95, row.estimate.over) == (97.0, 3.0, "600 episodes (seed 0)")


def test_unreadable_metrics_is_one_message_and_the_rest_is_reported(tmp_path):
    study = fake_records(tmp_path, {0: "{not json", 1: 97.5})
    collected = collect.collect(study)
    assert len(collected.errors) == 1 and "seed0/metrics.json is unreadable" in collected.errors[0]
    [row] = collect.rows(collected)
    assert row.estimate.values == [97.5]
    text = render.render_report(study, collected, "metalab report x")
    assert "| protonet_5w1s | 5w1s % | 97.50 +- 3.00 |" in text


def test_report_is_a_function_of_the_records(tmp_path):
    study = fake_records(tmp_path, {0: 98.0, 1: 99.2})
    first = render.render_report(study, collect.collect(study), "metalab report x")
    again = render.render_report(load_study(study.path), collect.collect(load_study(study.path)), "metalab report x")
    assert first == again and "98.60 +- 7.62" in first and "| met |" in first


def test_a_run_whose_overrides_changed_is_not_done(tmp_path):
    study = fake_records(tmp_path, {0: 98.0, 1: 99.2})
    assert [run_state(study, r, tmp_path / "runs") for r in study.runs] == ["recorded", "recorded"]
    changed = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], TINY + ["trainer.max_epochs=4"]))
    assert [run_state(changed, r, tmp_path / "runs") for r in changed.runs] == ["stale", "stale"]


def test_committed_study_reports_equal_what_their_records_give():
    """experiments/<study>/report*.md are exactly what the report code makes of the committed records."""
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        study = load_study(path)
        for budget in study.budgets:
            study = load_study(path, budget)
            report = study.folder / render.report_name(study)
            if not report.is_file():
                continue
            command = f"metalab report experiments/{path.name}" + (
                f" --budget {budget}" if budget != study.budgets[0] else ""
            )
            assert report.read_text() == render.render_report(study, collect.collect(study), command), report


def test_adopting_a_finished_run_made_outside_the_study(tmp_path):
    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], ["trainer.max_epochs=1"]))
    outside = tmp_path / "elsewhere" / "logs" / "omniglot_protonet_1shot" / "runs" / "2026-12-01_10-45-17_0"
    (outside / ".hydra").mkdir(parents=True)
    (outside / ".hydra" / "overrides.yaml").write_text(
        "- +experiment=omniglot/protonet_5w1s\n- cpu_threads=1\n- trainer.max_epochs=1\n- seed=1\n"
    )
    (outside / "metrics.json").write_text(json.dumps({"metrics": {"test/5w1s/acc": 90.0}, "seed": 1}))
    planned = next(r for r in study.runs if r.seed == 1)
    config = planned_yaml(compose_run(study, planned)).replace("output_dir: <run>", f"output_dir: {outside}")
    (outside / "config_resolved.yaml").write_text(config)
    from metalab.report.runner import adopt, copy_records

    runs = tmp_path / "runs"
    run = adopt(study, outside, runs)
    copy_records(study, run, runs)
    assert (run.seed, run_state(study, run, runs)) == (1, "recorded")
    assert str(tmp_path) not in (study.records_dir(run) / "config_resolved.yaml").read_text()
    info = json.loads((study.records_dir(run) / "run.json").read_text())
    assert info["adopted"] and info["threads"] == 1 and info["command"].startswith("python train.py +experiment=")
    (outside / ".hydra" / "overrides.yaml").write_text("- +experiment=omniglot/protonet_5w1s\n- seed=1\n")
    with pytest.raises(ConfigError, match="no run of study tiny"):
        adopt(study, outside, runs)


def test_unreadable_metrics_on_the_command_line_one_error_line_report_still_written(tmp_path):
    study = fake_records(tmp_path, {0: "{not json", 1: 97.5})
    result = metalab("report", str(study.path), "--no-run", "--runs-dir", str(tmp_path / "runs"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "seed0/metrics.json is unreadable" in errors[0], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    report = (study.folder / "report.md").read_text()
    assert "| protonet_5w1s | 5w1s % | 97.50 +- 3.00 | 600 episodes (seed 1) |" in report
    assert (study.records_dir(study.runs[0]) / "metrics.json").read_text() == "{not json"  # left for the user


def test_a_run_left_on_auto_precision_is_adopted_as_the_precision_it_resolved_to(tmp_path):
    """`auto` that resolved to fp32 computed exactly what a forced `trainer.precision=32-true` run computes."""
    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], ["trainer.precision=32-true"]))
    outside = tmp_path / "logs" / "run"
    (outside / ".hydra").mkdir(parents=True)
    (outside / ".hydra" / "overrides.yaml").write_text("- +experiment=omniglot/protonet_5w1s\n- seed=1\n")
    record = {"metrics": {"test/5w1s/acc": 90.0}, "seed": 1, "precision": {"requested": "auto", "used": "32-true"}}
    (outside / "metrics.json").write_text(json.dumps(record))
    from metalab.report.runner import adopt

    assert adopt(study, outside, tmp_path / "runs").overrides == ("trainer.precision=32-true",)
    record["precision"]["used"] = "bf16-mixed"  # resolved to something else: not the same run
    (outside / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="no run of study tiny"):
        adopt(study, outside, tmp_path / "runs")


def test_a_run_a_signal_stopped_is_resumed_not_taken_as_done(tmp_path):
    """SIGTERM makes a run test what it has and write metrics.json; the study must still resume it."""
    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], ["trainer.max_epochs=1"], seeds=[0]))
    run, runs = study.runs[0], tmp_path / "runs"
    run_dir = runs / run.relative_dir(study.name, study.budget)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"key": run.key}))
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run_state(study, run, runs) == "interrupted"
    stopped = {"metrics": {"test/5w1s/acc": 50.0}, "stopped": {"reason": "signal SIGTERM"}}
    (run_dir / "metrics.json").write_text(json.dumps(stopped))
    assert run_state(study, run, runs) == "interrupted"
    stopped["stopped"]["reason"] = "max_epochs"
    (run_dir / "metrics.json").write_text(json.dumps(stopped))
    assert run_state(study, run, runs) == "done"


_FAKE_RUN = (
    "import json, pathlib, sys; folder = pathlib.Path(sys.argv[1]); (folder / 'metrics.json').write_text("
    "json.dumps({'metrics': {'test/5w1s/acc': 61.5, 'test/5w1s/acc_ci95': 1.25}, "
    "'stopped': {'reason': 'max_epochs'}}))"
)


def _fake_study(tmp_path, monkeypatch):
    from metalab.report import runner as studies

    study = load_study(write_study(tmp_path, ["omniglot/protonet_5w1s"], ["trainer.max_epochs=1"], seeds=[0]))
    monkeypatch.setattr(
        studies, "command_of", lambda run, run_dir, resume, root: [sys.executable, "-c", _FAKE_RUN, str(run_dir)]
    )
    return studies, study, study.runs[0], tmp_path / "runs"


def test_a_finished_run_prints_its_headline_score_and_time(tmp_path, monkeypatch):
    studies, study, run, runs = _fake_study(tmp_path, monkeypatch)
    lines: list[str] = []
    assert studies.run_study(study, runs, log=lines.append) == []
    assert lines[1].startswith("[tiny] starting protonet_5w1s seed 0")
    assert lines[2].startswith("[tiny] finished protonet_5w1s seed 0: test/5w1s/acc 61.5 +- 1.25 in ")
    assert lines[3].startswith("[tiny] budget tiny: 1 run(s) finished now, 0 failed, 0 done before; ")
    info = json.loads((study.records_dir(run) / "run.json").read_text())
    assert info["status"] == "finished" and "commit" in info


def test_a_run_ending_while_its_study_is_stopped_is_recorded_as_it_ended(tmp_path, monkeypatch):
    """Ctrl-C arriving as the run finishes: its run.json must not keep status running and no commit."""
    studies, study, run, runs = _fake_study(tmp_path, monkeypatch)

    class InterruptedAfterTheRun(subprocess.Popen):
        interrupted = False

        def wait(self, timeout=None):
            code = super().wait(timeout)
            if not InterruptedAfterTheRun.interrupted:  # one Ctrl-C, as the run ends
                InterruptedAfterTheRun.interrupted = True
                raise KeyboardInterrupt
            return code

    monkeypatch.setattr(studies.subprocess, "Popen", InterruptedAfterTheRun)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        studies.execute(study, run, runs, log=lines.append)
    info = json.loads((runs / run.relative_dir(study.name, study.budget) / "run.json").read_text())
    assert info["status"] == "finished" and "commit" in info and "finished_at" in info
    assert lines[-1].startswith("[tiny] finished protonet_5w1s seed 0: test/5w1s/acc 61.5")


def test_a_budget_has_its_own_notes(tmp_path):
    path = write_study(
        tmp_path,
        ["omniglot/protonet_5w1s"],
        notes="the study's notes",
        budgets={"tiny": {"notes": "tiny's notes"}, "full": {}},
    )
    assert load_study(path, "tiny").notes == "tiny's notes"
    assert load_study(path, "full").notes == "the study's notes"
    assert "## Notes\n\ntiny's notes" in render.render_report(
        load_study(path, "tiny"), collect.Collected({}, [], []), "x"
    )
