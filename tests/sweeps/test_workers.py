"""Several ``metalab sweep`` workers on one study: each its own sampler seed, no parameter set evaluated
twice, no trial lost, and command-line values of searched keys honoured (journal and PostgreSQL)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from metalab.services.store.postgres_server import TemporaryPostgres, unavailable_reason
from metalab.sweeps.space import read_search_space
from metalab.sweeps.storage import open_storage
from metalab.sweeps.workers import REGISTRY_SUFFIX, register_worker, worker_seed

ROOT = Path(__file__).resolve().parents[2]
# the command line: way and width are searched by protonet_optuna and fixed here
FIXED = {"data.train.way": 5, "model.hidden": 32, "data.train_episodes": 10}
ARGS = [
    "hparams_search=protonet_optuna",
    "+experiment=omniglot/protonet_5w1s",
    *(f"{key}={value}" for key, value in FIXED.items()),
]
TRIALS_EACH = 2


@pytest.fixture(scope="module")
def postgres_url():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL case skipped: {reason}")
    with TemporaryPostgres(database="optuna") as server:
        yield server.url


def start_worker(storage: str, study: str, log_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        str(ROOT / "tests" / "sweeps" / "cheap_worker.py"),
        *ARGS,
        f"paths.log_dir={log_dir}",
        "--storage",
        storage,
        "--study-name",
        study,
        "--n-trials",
        str(TRIALS_EACH),
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_workers_share_a_study_without_repeating_or_dropping_work(backend, workers, tmp_path, request):
    storage = f"journal:{tmp_path / 'study.log'}" if backend == "journal" else request.getfixturevalue("postgres_url")
    study_name = f"w{workers}_{tmp_path.name}"[-60:]
    procs = [start_worker(storage, study_name, tmp_path) for _ in range(workers)]  # all started together
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, "\n".join(outputs)

    trials = optuna.load_study(study_name=study_name, storage=open_storage(storage)).get_trials(deepcopy=False)
    assert len(trials) == workers * TRIALS_EACH  # none lost, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    parameter_sets = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(parameter_sets)) == len(parameter_sets), parameter_sets  # none evaluated twice
    assert {t.user_attrs["worker_index"] for t in trials} == set(range(workers))
    assert len({t.user_attrs["sampler_seed"] for t in trials}) == workers
    for trial in trials:  # the command line's values, in the config each trial ran
        assert set(trial.params) == {"learner.optimizer.lr", "learner.scheduler.step_size"}
        seen = trial.user_attrs["config"]
        assert {key: seen[key] for key in FIXED} == FIXED
        assert seen["learner.optimizer.lr"] == pytest.approx(trial.params["learner.optimizer.lr"])


def test_a_restarted_worker_gets_a_new_index_and_seed(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    indices = [register_worker(storage, "s") for _ in range(3)]  # the third: a worker started again
    assert indices == [0, 1, 2]
    registry = optuna.load_study(study_name="s" + REGISTRY_SUFFIX, storage=storage)
    assert all("worker" in t.user_attrs for t in registry.trials)
    assert register_worker(None, "s") == 0  # an in-memory study has one worker


def test_worker_seeds_differ_and_the_first_worker_keeps_the_study_seed():
    seeds = [worker_seed(7, index) for index in range(64)]
    assert seeds[0] == 7 and len(set(seeds)) == 64
    assert worker_seed(1, 1) != worker_seed(2, 0)  # neighbouring study seeds do not line up
    assert worker_seed(None, 3) is None


@pytest.mark.parametrize(
    "params, arguments",
    [
        ({"model.hidden": "choice(32, 64)", "learner.optimizer.lr": "interval(0.001, 0.1)"}, ["model.hidden=16"]),
        ({"model.hidden": "16", "learner.optimizer.lr": "interval(0.001, 0.1)"}, ["model.hidden=choice(32, 64)"]),
    ],
)
def test_a_fixed_value_takes_its_key_out_of_the_search_space_as_hydra_s_sweeper_does(params, arguments):
    """hydra-optuna-sweeper 1.3 deletes every key with a plain value from the distributions, in either order."""
    space = read_search_space(params, arguments)
    assert list(space.distributions) == ["learner.optimizer.lr"]
    assert space.fixed["model.hidden"] == "16"
    assert space.trial_overrides({"learner.optimizer.lr": 0.01}) == ["model.hidden=16", "learner.optimizer.lr=0.01"]
