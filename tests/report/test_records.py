"""Benchmark records: what append_record writes, and the tables generated from records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metalab.errors import MetalabError
from metalab.report.records import append_record, git_commit, read_records, relative_command, repo_root
from metalab.report.tables import TableSpec, marked_files, refresh, render_markdown, render_table

ROOT = Path(__file__).resolve().parents[2]


def test_append_record_writes_one_line_with_its_context(tmp_path, monkeypatch):
    monkeypatch.delenv("METALAB_RECORDS_DIR", raising=False)
    path = tmp_path / "records" / "speed.jsonl"
    append_record(path, {"setting": "a", "steps_per_s": 1.5}, benchmark="speed", settings={"rounds": 3})
    append_record(path, [{"setting": "a", "steps_per_s": 1.7}, {"setting": "b", "steps_per_s": 0.9}], benchmark="speed")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["figures"] == [{"setting": "a", "steps_per_s": 1.5}] and first["settings"] == {"rounds": 3}
    for key in ("command", "commit", "dirty", "cpu", "cpu_features", "torch_threads", "date", "packages"):
        assert key in first, key
    assert first["command"].startswith("python ") and first["cpu"]
    assert [len(r["figures"]) for r in read_records(path)] == [1, 2]


def test_commands_are_recorded_without_machine_paths():
    root = repo_root()
    command = relative_command(
        [str(root / "benchmarks/meta/x.py"), "--out", f"--dir={root / 'logs'}", "/tmp/else"], root
    )
    assert command == "python benchmarks/meta/x.py --out --dir=logs /tmp/else"


def test_unreadable_records_give_one_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"figures": []}\nnot json\n')
    with pytest.raises(MetalabError, match=r"bad.jsonl:2 is not a JSON record"):
        read_records(path)
    with pytest.raises(MetalabError, match="no figures"):
        append_record(tmp_path / "x.jsonl", [])


def test_records_dir_redirects_trial_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_RECORDS_DIR", str(tmp_path / "trial"))
    append_record("benchmarks/x/records/y.jsonl", {"a": 1})
    assert len(read_records(tmp_path / "trial" / "benchmarks/x/records/y.jsonl")) == 1
    assert not (repo_root() / "benchmarks/x").exists()


def _records(tmp_path: Path) -> Path:
    path = tmp_path / "r.jsonl"  # absolute and outside the repository: written as given
    for speed, rounds in ((1.23456, 3), (2.5, 5)):
        append_record(
            path,
            [{"order": "first", "speedup": speed}, {"order": "second", "speedup": speed * 2}],
            benchmark="maml",
            settings={"rounds": rounds},
        )
    append_record(path, {"other": 1}, benchmark="else")
    return path


def test_table_selects_filters_and_formats(tmp_path):
    records = read_records(_records(tmp_path))
    spec = TableSpec.parse(
        "records=r.jsonl where=benchmark:maml last=1 columns=order,speedup:speed-up context=none", "t"
    )
    assert render_table(records, spec) == "| order | speed-up |\n|---|---|\n| first | 2.5 |\n| second | 5 |"
    spec = TableSpec.parse("records=r.jsonl where=settings.rounds:3 columns=speedup format=.2f context=none", "t")
    assert render_table(records, spec).splitlines()[2:] == ["| 1.23 |", "| 2.47 |"]
    spec = TableSpec.parse(
        "records=r.jsonl where=benchmark:maml columns=settings.rounds:rounds,order context=none", "t"
    )
    assert render_table(records, spec).splitlines()[2:] == [
        "| 3 | first |",
        "| 3 | second |",
        "| 5 | first |",
        "| 5 | second |",
    ]


def test_marked_blocks_are_regenerated_and_prose_kept(tmp_path):
    _records(tmp_path)
    text = (
        "# Results\nprose before\n<!-- metalab:table records=r.jsonl where=benchmark:else context=none -->\n"
        "| typed by hand | 9.99 |\n<!-- metalab:end -->\nprose after\n"
    )
    out = render_markdown(text, tmp_path)
    assert out == (
        "# Results\nprose before\n<!-- metalab:table records=r.jsonl where=benchmark:else context=none -->\n"
        "| other |\n|---|\n| 1 |\n<!-- metalab:end -->\nprose after\n"
    )
    assert render_markdown(out, tmp_path) == out
    with pytest.raises(MetalabError, match="not allowed"):
        render_markdown("<!-- metalab:table records=r.jsonl colums=a -->\n<!-- metalab:end -->", tmp_path)


def test_committed_tables_equal_what_the_committed_records_give():
    """Every table marked in the repository's Markdown is exactly what its committed records generate."""
    assert not [str(p.relative_to(ROOT)) for p in refresh(root=ROOT, check=True)]


def test_a_render_marker_draws_its_section_from_the_newest_record(tmp_path):
    _records(tmp_path)
    (tmp_path / "draw.py").write_text("def section(record):\n    return [f\"rows: {len(record['figures'])}\", '']\n")
    text = "<!-- metalab:render records=r.jsonl with=draw.py:section -->\nold\n<!-- metalab:end -->\n"
    newest = read_records(tmp_path / "r.jsonl")[-1]
    assert render_markdown(text, tmp_path) == text.replace("old", f"rows: {len(newest['figures'])}")
    with pytest.raises(MetalabError, match="has no function 'nope'"):
        render_markdown(text.replace("section", "nope"), tmp_path)
    with pytest.raises(MetalabError, match="takes records="):
        render_markdown("<!-- metalab:render records=r.jsonl -->\n<!-- metalab:end -->\n", tmp_path)


def test_the_services_results_page_is_generated_and_checked():
    """experiments/services/results.md is made by `metalab tables` (so the check above covers it)."""
    assert ROOT / "experiments" / "services" / "results.md" in marked_files(ROOT)


def test_metalab_tables_check_command(tmp_path):
    _records(tmp_path)
    (tmp_path / "train.py").write_text("")
    (tmp_path / "conf").mkdir()
    doc = tmp_path / "results.md"
    doc.write_text("<!-- metalab:table records=r.jsonl context=none where=benchmark:else -->\n<!-- metalab:end -->\n")
    assert marked_files(tmp_path) == [doc]
    command = [sys.executable, "-m", "metalab", "tables", "--check"]
    stale = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert stale.returncode == 1 and "stale: results.md" in stale.stderr
    assert subprocess.run([sys.executable, "-m", "metalab", "tables"], cwd=tmp_path).returncode == 0
    assert subprocess.run(command, cwd=tmp_path).returncode == 0
    assert "| 1 |" in doc.read_text()


def test_records_keep_what_ran_without_machine_folders():
    from metalab.report.records import without_machine_paths

    text = "45.6 0 /srv/x/.venv/bin/python train.py; journal:/home/u/repo/logs/a.journal http://127.0.0.1:80/v1/e"
    assert without_machine_paths(text) == "45.6 0 python train.py; journal:a.journal http://127.0.0.1:80/v1/e"


def test_dirty_means_changed_code_not_regenerated_reports_figures_or_records(tmp_path):
    """A study rewrites its report and figure when one of its runs ends; a run finishing beside it must not be
    recorded as made by uncommitted code for that."""

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    files = {
        "src/pkg/model.py": "x = 1\n",
        "conf/train.yaml": "seed: 0\n",
        "experiments/study/report.md": "old\n",
        "experiments/study/figures/curves.png": "png",
        "experiments/study/runs/full/a/seed0/metrics.json": "{}",
        "benchmarks/meta/records/speed.jsonl": "{}\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    assert git_commit(tmp_path)["dirty"] is False
    for name in files:
        if not name.startswith(("src/", "conf/")):
            (tmp_path / name).write_text("regenerated")
    (tmp_path / "new_untracked.py").write_text("y = 2\n")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "conf/train.yaml").write_text("seed: 1\n")
    assert git_commit(tmp_path)["dirty"] is True
