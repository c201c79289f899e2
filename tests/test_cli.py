"""Bad input on the command line ends with one clear `error:` line and exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import needs_omniglot

ROOT = Path(__file__).resolve().parents[1]


def run_train(*args: str, run_dir: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["+experiment=omniglot/no_such"], "error: unknown experiment 'omniglot/no_such'; available: "),
        (["data.n_wya=3"], "error: Could not override 'data.n_wya'"),
        # checked when the data module sets up, after it read Omniglot (without it: the missing-file error)
        pytest.param(
            ["data.train.way=5000"], "error: data.train.way=5000 is not allowed: must be <= 4112", marks=needs_omniglot
        ),
        pytest.param(
            ["data.test=[5w0s]"], "error: data.test[5w0s].shot=0 is not allowed: must be >= 1", marks=needs_omniglot
        ),
        pytest.param(
            ["data.val.shot=-1"], "error: data.val.shot=-1 is not allowed: must be >= 1", marks=needs_omniglot
        ),
        (
            ["paths.data_dir=/nonexistent/place"],
            "error: data file 'omniglot/omniglot.npz' not found; looked in: /nonexistent/place",
        ),
        (
            ["learner.optimizer.lr=fast"],
            "error: learner.optimizer.lr='fast' is not allowed: learner.optimizer.lr must be a number "
            "(the config has 0.001)",
        ),
        (["trainer.precision=fp7"], "error: trainer.precision='fp7' is not allowed: must be auto or one of "),
        pytest.param(  # Lightning checks max_steps when the trainer is built, after the data are loaded
            ["++trainer.max_steps=-7"],
            "error: trainer.max_steps must be a non-negative integer or -1 (infinite steps). You passed in -7.",
            marks=needs_omniglot,
        ),
        (["logger=null"], "error: "),
    ],
)
def test_bad_input_gives_one_error_line(args, expected, tmp_path):
    result = run_train(*args, run_dir=tmp_path / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@needs_omniglot
def test_a_file_that_is_not_a_checkpoint_gives_one_error_line(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"these bytes are no checkpoint\n" * 10)
    for extra in ([], ["train=false"]):
        result = run_train(f"ckpt_path={garbage}", *extra, run_dir=tmp_path / "run")
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(
            f"error: ckpt_path='{garbage}' is not allowed: not a Lightning checkpoint"
        ), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
