"""``metalab sweep`` end to end on tiny ProtoNet trials: pruning, failed trials, dead workers, Hydra's path."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import needs_omniglot  # noqa: E402

from metalab.cli import main as metalab_main
from metalab.sweeps.runner import WORKER_ATTR, fail_trials_of_dead_workers

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "hparams_search=protonet_optuna",
    "+experiment=omniglot/protonet_5w1s",
    "data.train_episodes=2",
    "data.val_episodes=3",
    "data.train.query=2",
    "data.val.query=2",
    "model.hidden=8",
    "data.eval_tasks_per_batch=3",
    "trainer.accelerator=cpu",
]


def study_of(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


@needs_omniglot
def test_pruned_failed_and_complete_trials_are_recorded(tmp_path, monkeypatch):
    """A threshold above 100% prunes every trial after its first validation epoch, with the value it
    reported; a trial whose train way exceeds the classes fails; the sweep goes on through both."""
    monkeypatch.chdir(ROOT)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "sweep",
        *TINY,
        f"paths.log_dir={tmp_path}",
        "data.train.way=choice(5,9999)",
        "pruner.lower=101",
        "--pruner",
        "threshold",
        "--n-trials",
        "4",
        "--storage",
        storage,
        "--study-name",
        "t",
    ]
    assert metalab_main(argv) == 0
    trials = study_of(storage, "t").trials
    assert len(trials) == 4
    for trial in trials:
        if trial.params["data.train.way"] == 9999:
            assert trial.state == optuna.trial.TrialState.FAIL
            assert "data.train.way=9999" in trial.user_attrs["error"]
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert list(trial.intermediate_values) == [0]  # pruned at the first validation epoch
            assert 0.0 <= trial.intermediate_values[0] <= 100.0


@needs_omniglot
def test_unpruned_trial_returns_the_validation_accuracy_it_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "sweep",
        *TINY,
        f"paths.log_dir={tmp_path}",
        "trainer.max_epochs=1",
        "--n-trials",
        "1",
        "--storage",
        storage,
        "--study-name",
        "u",
    ]
    assert metalab_main(argv) == 0
    trial = study_of(storage, "u").trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    import json

    logged = json.loads((Path(trial.user_attrs["output_dir"]) / "metrics.json").read_text())["metrics"]["val/acc"]
    assert trial.value == pytest.approx(logged)


def test_a_dead_local_worker_s_trial_is_failed_and_queued_again(tmp_path):
    storage = f"journal:{tmp_path / 'j.log'}"
    from metalab.sweeps.storage import open_storage

    study = optuna.create_study(study_name="d", storage=open_storage(storage))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{dead.pid}")
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{os.getpid()}")
    fail_trials_of_dead_workers(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[trial.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    queued = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(queued) == 1 and queued[0].user_attrs["retry_of"] == trial.number
    assert queued[0].system_attrs["fixed_params"] == trial.params  # the retry samples nothing new


@pytest.mark.slow  # three trainings in a fresh process: about a minute on an idle core
@needs_omniglot
def test_hydra_sweep_records_a_failed_trial_and_goes_on(tmp_path):
    """``train.py -m``: a trial raising a MetalabError is FAIL in the study, the others COMPLETE, exit 0."""
    storage = f"sqlite:///{tmp_path / 'hydra.db'}"
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            *TINY,
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=h",
            "data.train.way=choice(5,9999)",
            "hydra.sweeper.sampler.seed=3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_of(storage, "h").trials
    assert len(trials) == 3
    for trial in trials:
        expected = "FAIL" if trial.params["data.train.way"] == 9999 else "COMPLETE"
        assert trial.state.name == expected
    assert any(t.state.name == "FAIL" for t in trials) or pytest.skip("the sampler drew no failing way")
