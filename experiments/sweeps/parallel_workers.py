"""Workers sharing one study: ``python experiments/sweeps/parallel_workers.py --storage journal|postgres``.

Three phases, each a fresh study of ``--trials`` tiny ProtoNet trials driven by ``metalab sweep`` processes:

1. one worker runs every trial;
2. two workers started together run half each: no trial may be lost (the study holds exactly ``--trials``
   finished trials) or duplicated (trial numbers unique, and no two trials with the same parameter set:
   each worker seeds its sampler from the study's seed and its own index, ``metalab.sweeps.workers``);
   ``data.train.way`` and ``model.hidden``, searched by ``protonet_optuna`` but fixed in ``TINY``, must
   not be searched (only the learning rate and the step size are);
3. a worker is killed with SIGKILL in the middle of a trial; a new worker then runs: the killed trial must
   be marked FAIL, its parameters re-queued and completed, and the study must still answer ``best_trial``.

``postgres`` starts a throw-away server (``metalab.services.store.postgres_server``) and stops it after. Writes a JSON
record to ``experiments/sweeps/records/workers_<storage>.json``. Wall times on a shared machine depend on
the other processes: the record keeps the load average beside them. The wall-time gain of two workers
over one needs two idle cores (``taskset -c 0,1``, nothing else running); ``--no-sigkill`` skips phase 3.

Records made before the fix of 2026-12-06 ran every trial with the searched way and width (the
command-line ``data.train.way=5 model.hidden=32`` were dropped) and both workers with sampler seed 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]

from record_run import commit, machine_load  # noqa: E402

from metalab.environment import environment_report  # noqa: E402
from metalab.report.records import without_machine_paths  # noqa: E402
from metalab.sweeps.storage import open_storage  # noqa: E402

# A few seconds of real training per trial: 5-way ProtoNet, 10 episodes, 10 validation episodes.
TINY = [
    "hparams_search=protonet_optuna",
    "+experiment=omniglot/protonet_5w1s",
    "data.train_episodes=10",
    "trainer.max_epochs=1",
    "data.val_episodes=10",
    "data.train.way=5",
    "model.hidden=32",
]


def worker(storage: str, study: str, n_trials: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "metalab",
        "sweep",
        *TINY,
        "--storage",
        storage,
        "--study-name",
        study,
        "--n-trials",
        str(n_trials),
    ]
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT)


def run_workers(storage: str, study: str, trials_each: list[int], log: Path) -> float:
    start = time.perf_counter()
    procs = [worker(storage, study, n, log) for n in trials_each]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker exited with {codes}; see {log}")
    return time.perf_counter() - start


def check_study(storage: str, study: str, expected: int) -> dict:
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    parameter_sets = [tuple(sorted(t.params.items())) for t in trials]
    return {
        "trials": len(trials),
        "complete": states["COMPLETE"],
        "states": {k: v for k, v in states.items() if v},
        "unique_numbers": len(set(numbers)) == len(numbers),
        "numbers": sorted(numbers),
        "lost_none": states["COMPLETE"] == expected and len(trials) == expected,
        "duplicated_parameter_sets": len(parameter_sets) - len(set(parameter_sets)),
        "searched_keys": sorted({key for t in trials for key in t.params}),
        "sampler_seeds": sorted({t.user_attrs.get("sampler_seed") for t in trials}, key=str),
        "workers": sorted({t.user_attrs.get("worker", "?") for t in trials}),
    }


def kill_mid_trial(storage: str, study: str, log: Path) -> dict:
    """SIGKILL a worker while its first trial trains, then let a new worker continue the study."""
    victim = worker(storage, study, 2, log)
    opened = open_storage(storage)
    deadline = time.time() + 900
    running = []
    while time.time() < deadline and not running:
        time.sleep(1.0)
        with contextlib.suppress(KeyError):
            running = [
                t
                for t in optuna.load_study(study_name=study, storage=opened).get_trials(
                    deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
                )
                if t.user_attrs.get("worker")
            ]
    time.sleep(3.0)  # into the training, past the parameter sampling
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = running[0].number if running else None
    run_workers(storage, study, [2], log)
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    retried = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    best = optuna.load_study(study_name=study, storage=open_storage(storage)).best_trial.number
    return {
        "killed_trial": killed,
        "killed_trial_state": by_number[killed].state.name if killed in by_number else None,
        "killed_trial_error": by_number[killed].user_attrs.get("error") if killed in by_number else None,
        "retried_as": [t.number for t in retried],
        "retry_states": [t.state.name for t in retried],
        "still_running": sum(t.state == optuna.trial.TrialState.RUNNING for t in trials),
        "best_trial_after": best,
    }


@contextlib.contextmanager
def storage_url(kind: str, folder: Path):
    if kind == "journal":
        yield lambda name: f"journal:{folder / name}.log"
    else:
        from metalab.services.store.postgres_server import TemporaryPostgres

        with TemporaryPostgres(database="optuna") as server:
            yield lambda name: server.url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=("journal", "postgres"), required=True)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--no-sigkill", action="store_true", help="skip phase 3 (the SIGKILL of a worker)")
    args = parser.parse_args()
    record = {
        "name": f"workers_{args.storage}",
        "command": ["python", *sys.argv],
        "commit": commit(),
        "environment": environment_report(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_start": machine_load(),
        "trials": args.trials,
        "trial_overrides": TINY,
    }
    with tempfile.TemporaryDirectory(prefix="metalab-workers-") as tmp, storage_url(args.storage, Path(tmp)) as url:
        log = Path(tmp) / "workers.log"
        half = args.trials // 2
        record["one_worker_wall_seconds"] = round(run_workers(url("one"), "one_worker", [args.trials], log), 1)
        record["one_worker"] = check_study(url("one"), "one_worker", args.trials)
        record["two_workers_wall_seconds"] = round(
            run_workers(url("two"), "two_workers", [half, args.trials - half], log), 1
        )
        record["two_workers"] = check_study(url("two"), "two_workers", args.trials)
        if not args.no_sigkill:
            record["sigkill"] = kill_mid_trial(url("kill"), "killed_worker", log)
        record["load_end"] = machine_load()
        tail = log.read_text().splitlines()
        record["log_died_lines"] = [line for line in tail if "died" in line]
    out = Path(__file__).resolve().parent / "records" / f"workers_{args.storage}.json"
    out.write_text(without_machine_paths(json.dumps(record, indent=2)))
    print(
        json.dumps(
            {
                k: record.get(k)
                for k in ("one_worker_wall_seconds", "two_workers_wall_seconds", "two_workers", "sigkill")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
