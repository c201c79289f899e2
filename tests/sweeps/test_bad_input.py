"""Bad sweep input ends with one ``error:`` line and exit status 2, before any trial exists."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from metalab.cli import main as metalab_main

ROOT = Path(__file__).resolve().parents[2]
PROTONET = ["hparams_search=protonet_optuna", "+experiment=omniglot/protonet_5w1s"]


def error_lines(capsys) -> list[str]:
    return [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.strip() and "Warning" not in line and not line.startswith("  ")
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pruner", "nosuch"], "unknown pruner 'nosuch'; available: hyperband, median, none"),
        (["hydra/sweeper/sampler=nosuch"], "unknown sampler 'nosuch'; available: cmaes, gp"),
        (["hparams_search=nosuch"], "unknown hparams_search 'nosuch'; available: ewc_optuna, protonet_optuna"),
        (["hydra.sweeper.params=null"], "nothing to search"),
        (["model.hidden=choice()"], "model.hidden: cannot read 'choice()'"),
        (["model.hidden=choice(8,"], "model.hidden: cannot read"),
        (["--storage", "postgresql+psycopg://postgres@127.0.0.1:1/optuna"], "cannot be reached"),
    ],
)
def test_runner_refuses_bad_input_with_one_line(extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["sweep", *PROTONET, f"paths.log_dir={tmp_path}", *extra]
    if "--storage" not in extra:
        argv += ["--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    assert metalab_main(argv) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    if (tmp_path / "study.db").exists():  # nothing was started: no trial, hence none left RUNNING
        for summary in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'study.db'}"):
            assert summary.n_trials == 0


def test_no_search_space_without_hparams_search(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert metalab_main(["sweep", "+experiment=omniglot/protonet_5w1s", f"paths.log_dir={tmp_path}"]) == 2
    assert "no search space: add hparams_search=" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["hydra/sweeper/sampler=nosuch"], "unknown hydra/sweeper/sampler 'nosuch'; available: cmaes, gp,"),
        (["hydra.sweeper.params=null"], "hydra.sweeper.params has nothing to search"),
        (["hydra.sweeper.storage=postgresql+psycopg://postgres@127.0.0.1:1/optuna"], "cannot be reached"),
    ],
)
def test_hydra_sweep_refuses_bad_input_with_one_line(extra, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "train.py", "-m", *PROTONET, f"paths.log_dir={tmp_path}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
