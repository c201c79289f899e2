"""Every bad input of issue 37 ends with exit status 2 and one `error:` line naming the key and what is
allowed (the Python-API ones with a ValueError at construction), before any training or data loading.

The cases are those of ``scripts/bad_inputs.py`` (which writes the table in docs/bad_inputs.md). Here
they run in this process, ``train.py``'s entry point called as ``python train.py`` calls it, so the whole
list costs seconds; one case also runs as a real process, to hold the in-process path to it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "scripts" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # dataclasses look their module up by name
_spec.loader.exec_module(bad_inputs)
CASES = bad_inputs.CASES


def _train_in_process(args: tuple[str, ...], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    """``python train.py <args>`` in this process: the override check of its ``__main__`` block, then its
    ``main`` with the config Hydra would pass (composed here, the run's folders in ``tmp_path``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    import train as entry

    # Lightning's and Hydra's handlers kept the captured stderr of an earlier test, closed since
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for handler in (h for g in loggers for h in getattr(g, "handlers", [])):  # (placeholders have none)
        if type(handler) is logging.StreamHandler:
            monkeypatch.setattr(handler, "stream", sys.stderr)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py"), *args])
    monkeypatch.chdir(ROOT)
    overrides = [a for a in args if not a.startswith("-")]
    overrides += [f"paths.output_dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}", "hydra.mode=RUN"]
    with pytest.raises(SystemExit) as stopped:
        entry.exit_on_bad_overrides(entry.CONFIG_DIR, entry.CONFIG_NAME, list(args))
        with initialize_config_dir(config_dir=str(ROOT / entry.CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=entry.CONFIG_NAME, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # hydra.main passes the config without its own node
        entry.main.__wrapped__(cfg)
    return stopped.value.code, capsys.readouterr().err


def _metalab_in_process(case, tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    from metalab.cli import main

    folder = tmp_path / "empty" if case.in_empty_folder else ROOT
    folder.mkdir(exist_ok=True)
    monkeypatch.chdir(folder)
    code = main(list(case.metalab))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gives_exit_2_and_one_error_line(case, tmp_path, monkeypatch, capsys):
    if case.api is not None:
        with pytest.raises(ValueError) as raised:
            case.api()
        assert case.expected in str(raised.value)
        return
    if case.train:
        code, stderr = _train_in_process(case.train, tmp_path, monkeypatch, capsys)
    else:
        code, stderr = _metalab_in_process(case, tmp_path, monkeypatch, capsys)
    outcome = bad_inputs.Outcome(code, stderr)
    assert code == 2, stderr[-2000:]
    assert len(outcome.error_lines) == 1 and case.expected in outcome.error_lines[0], stderr[-2000:]
    assert bad_inputs.passed(case, outcome), stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists()  # stopped before a run could finish


def test_a_real_process_gives_the_same_line(tmp_path):
    case = next(c for c in CASES if c.name == "seed=-1")
    outcome = bad_inputs.run_case(case, tmp_path)
    assert (
        outcome.code == 2 and outcome.error_lines == [outcome.last_line] and outcome.last_line.startswith(case.expected)
    ), outcome.stderr[-2000:]


def test_objectives_are_checked_before_the_first_generation(tmp_path, monkeypatch, capsys):
    """The mismatch used to surface in tell(), after a generation had been evaluated."""
    from metalab.learners import search

    def must_not_run(*args, **kwargs):
        raise AssertionError("a generation ran before the objectives were checked")

    monkeypatch.setattr(search, "run_generation", must_not_run)
    code, stderr = _train_in_process(
        ("+experiment=ga/zdt1", "learner.searcher.objectives=3"), tmp_path, monkeypatch, capsys
    )
    assert code == 2 and "learner.searcher.objectives=3 is not allowed" in stderr


def test_tables_in_the_repository_say_how_many_tables_they_checked(monkeypatch, capsys):
    from metalab.cli import main
    from metalab.report import tables

    monkeypatch.chdir(ROOT / "docs")  # a subfolder: the repository is found from the current directory
    monkeypatch.setattr(tables, "refresh", lambda files, root, check, **_: [])  # all fresh, without reading records
    assert main(["tables", "--check"]) == 0
    out = capsys.readouterr().out
    expected = sum(len(tables.OPEN.findall(p.read_text())) for p in tables.marked_files(ROOT))
    assert f"checked {expected} tables in " in out and f"of {ROOT}: all fresh" in out


def test_jobs_help_lists_every_job_and_sweep_help_every_pruner(capsys):
    from metalab.cli import build_parser
    from metalab.services.commands import JOB_NAMES
    from metalab.services.jobs import JOBS

    assert set(JOB_NAMES) == {"migrate", *JOBS}
    parser = build_parser()
    for command in ("jobs", "sweep"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        names = JOB_NAMES if command == "jobs" else [p.stem for p in (ROOT / "conf" / "pruner").glob("*.yaml")]
        assert all(name in text for name in names), (command, text)
    assert "threshold" in names
