"""Figures of the sweep must-shows, from what the runs wrote: ``python experiments/sweeps/figures.py [ROOT]``.

Reads the studies (Optuna storages under ``ROOT/logs/optuna``), the runs' ``metrics.json`` and the
per-command records of ``record_run.py`` / ``parallel_workers.py`` (``ROOT/experiments/sweeps/records``),
and appends one record per must-show to ``experiments/sweeps/records/sweeps.jsonl`` with
:func:`metalab.report.records.append_record` (each with the exact commands and their CPU seconds), which
the tables in ``experiments/sweeps/README.md`` are generated from (``metalab tables``). ``ROOT``: the
checkout the runs were made in (default: this one).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna
import scipy.stats

from metalab.report.records import append_record
from metalab.sweeps.storage import open_storage

OUT = "experiments/sweeps/records/sweeps.jsonl"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def load(root: Path, name: str) -> dict[str, Any] | None:
    path = root / "experiments/sweeps/records" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def command_of(record: dict[str, Any]) -> str:
    words = ["python" if w.endswith("/python") else w for w in record["command"]]
    return " ".join(words)


def study_figures(root: Path, storage: str, name: str) -> dict[str, Any]:
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    figures: dict[str, Any] = {
        "trials": len(trials),
        **{k: v for k, v in states.items() if v},
        "trial_cpu_s": round(sum(t.user_attrs.get("cpu_seconds", 0.0) for t in done), 1),
    }
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = (
            max(complete, key=lambda t: t.value)
            if study.direction.name == "MAXIMIZE"
            else min(complete, key=lambda t: t.value)
        )
        figures.update(
            best_value=round(best.value, 2),
            best_trial=best.number,
            best_params=json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in best.params.items()}),
        )
    return figures


def best_within_cpu(storage: str, name: str, cpu_limit: float) -> tuple[float | None, float]:
    """Best value among trials finished before the study's trials had used ``cpu_limit`` CPU-seconds in all."""
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()), key=lambda t: t.datetime_complete
    )
    used, best = 0.0, None
    for trial in finished:
        used += trial.user_attrs.get("cpu_seconds", 0.0)
        if used > cpu_limit:
            break
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = trial.value if best is None else max(best, trial.value)
    return best, used


def metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["metrics"] if path.is_file() else {}


def rer(default: float, best: float) -> float:
    """Relative error reduction (%) of accuracy ``best`` against ``default`` (accuracies in %)."""
    return round(100.0 * ((100 - default) - (100 - best)) / (100 - default), 1)


def main() -> int:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    print(f"runs read from {root}")
    # to be filled per must-show below; each block is skipped when its runs are missing
    for block in (protonet_block, pruning_block, ewc_block, workers_block, ddp_block, submitit_block):
        try:
            block(root)
        except (FileNotFoundError, KeyError) as missing:  # a must-show whose runs are not there (yet)
            print(f"skipped {block.__name__}: {missing!r}")
    return 0


def sweep_cpu(root: Path, prefix: str) -> tuple[float, float, list[str]]:
    records = [load(root, f"{prefix}_w{k}") for k in range(1, 10)]  # every worker that ran
    records = [r for r in records if r]
    if not records:
        raise FileNotFoundError(f"records {prefix}_w*.json")
    return (
        round(sum(r["cpu_seconds"] for r in records), 1),
        round(max(r["wall_seconds"] for r in records), 1),
        [command_of(r) for r in records],
    )


def protonet_block(root: Path) -> None:
    storage = f"journal:{root}/logs/optuna/protonet_unpruned.journal"
    sweep = study_figures(root, storage, "protonet_unpruned")
    cpu, wall, commands = sweep_cpu(root, "protonet_unpruned")
    default_val = load(root, "protonet_defaults_val")
    dv = metrics(root / "logs/sweeps/protonet_unpruned/evaluate_defaults/metrics.json") or metrics(
        root / "logs/sweeps/protonet_tpe_unpruned/evaluate_defaults/metrics.json"
    )
    row = {
        "what": "ProtoNet 5w1s sweep (validation)",
        **sweep,
        "default_val_acc": round(dv.get("val/acc", math.nan), 2),
        "default_val_ci95": round(dv.get("val/acc_ci95", math.nan), 2),
        "sweep_cpu_s": cpu,
        "sweep_wall_s": wall,
    }
    if "best_value" in sweep and dv:
        row["val_error_reduction_pct"] = rer(dv["val/acc"], sweep["best_value"])
    append_record(
        OUT,
        row,
        benchmark="protonet_sweep",
        command=" ; ".join(commands + ([command_of(default_val)] if default_val else [])),
        settings={"budget": "45 training episodes (3x15), 40 val episodes/epoch, 1 thread, fp32"},
    )
    print(row)
    test_rows = []
    for name, label in (("protonet_defaults_test", "default"), ("protonet_best_test", "best")):
        rec = load(root, name)
        if rec is None:
            continue
        out = next(
            iter(
                sorted(
                    (root / "logs/sweeps/protonet_unpruned").glob(
                        f"evaluate_{'defaults' if label == 'default' else 'best'}_seed*_test/metrics.json"
                    )
                )
            ),
            None,
        )
        m = metrics(out) if out else {}
        test_rows.append(
            {
                "config": label,
                "seed": 1,
                "test_5w1s_acc": round(m.get("test/5w1s/acc", math.nan), 2),
                "test_5w1s_ci95": round(m.get("test/5w1s/acc_ci95", math.nan), 2),
                "cpu_s": rec["cpu_seconds"],
                "command": command_of(rec),
            }
        )
    if len(test_rows) == 2:
        test_rows[1]["test_error_reduction_pct"] = rer(test_rows[0]["test_5w1s_acc"], test_rows[1]["test_5w1s_acc"])
    if test_rows:
        append_record(
            OUT, test_rows, benchmark="protonet_retrain_test", command=" ; ".join(r.pop("command") for r in test_rows)
        )
        print(test_rows)


def pruning_block(root: Path) -> None:
    unpruned = f"journal:{root}/logs/optuna/protonet_unpruned.journal"
    pruned = f"journal:{root}/logs/optuna/protonet_median.journal"
    a, b = study_figures(root, unpruned, "protonet_unpruned"), study_figures(root, pruned, "protonet_median")
    cpu_a, _, _ = sweep_cpu(root, "protonet_unpruned")
    cpu_b, wall_b, commands = sweep_cpu(root, "protonet_median")
    half_best, _ = best_within_cpu(pruned, "protonet_median", 0.5 * a["trial_cpu_s"])
    row = {
        "what": "median pruning vs none",
        "unpruned_best": a.get("best_value"),
        "pruned_best": b.get("best_value"),
        "pruned_trials": b["trials"],
        "pruned": b.get("pruned", 0),
        "unpruned_trial_cpu_s": a["trial_cpu_s"],
        "pruned_trial_cpu_s": b["trial_cpu_s"],
        "cpu_ratio": round(b["trial_cpu_s"] / a["trial_cpu_s"], 2),
        "process_cpu_ratio": round(cpu_b / cpu_a, 2),
        "pruned_best_within_half_cpu": half_best,
    }
    append_record(OUT, row, benchmark="protonet_pruning", command=" ; ".join(commands))
    print(row)


def ewc_block(root: Path) -> None:
    storage = f"journal:{root}/logs/optuna/ewc.journal"
    sweep = study_figures(root, storage, "ewc")
    cpu, wall, commands = sweep_cpu(root, "ewc")
    default_val = load(root, "ewc_defaults_val")
    dv = metrics(root / "logs/sweeps/ewc/evaluate_defaults/metrics.json")
    row = {
        "what": "EWC Split MNIST sweep (validation, task-IL)",
        **sweep,
        "default_val_acc": round(dv.get("test/task_il/acc", math.nan), 2),
        "sweep_cpu_s": cpu,
        "sweep_wall_s": wall,
    }
    if "best_value" in sweep and dv:
        row["val_error_reduction_pct"] = rer(dv["test/task_il/acc"], sweep["best_value"])
    append_record(
        OUT,
        row,
        benchmark="ewc_sweep",
        command=" ; ".join(commands + ([command_of(default_val)] if default_val else [])),
        settings={"budget": "2000 train examples/task, 1 epoch/task, batch 10, 1 thread; 1000 held-out/task"},
    )
    print(row)
    test_rows = [row for label in ("defaults", "best") if (row := ewc_retrain_row(root, label))]
    if len(test_rows) == 2:
        test_rows[1]["test_error_reduction_pct"] = rer(
            test_rows[0]["test_task_il_acc"], test_rows[1]["test_task_il_acc"]
        )
    if test_rows:
        append_record(
            OUT,
            test_rows,
            benchmark="ewc_retrain_test",
            command=" ; ".join(r.pop("command") for r in test_rows),
            settings={"ci": "95% t-interval over the retrain seeds (a continual run has one score per seed)"},
        )
        print(test_rows)


def ewc_retrain_row(root: Path, label: str) -> dict[str, Any] | None:
    """The ``label`` config (defaults or the study's best) retrained on seeds 1-9 and tested: mean and 95% CI."""
    runs = []
    for seed in range(1, 10):
        record = load(root, f"ewc_{label}_test_s{seed}")
        m = metrics(root / f"logs/sweeps/ewc/evaluate_{label}_seed{seed}_test/metrics.json")
        if record and record["exit_status"] == 0 and m:
            runs.append((seed, record, m))
    if not runs:
        return None
    task_il = [m["test/task_il/acc"] for _, _, m in runs]
    class_il = [m["test/class_il/acc"] for _, _, m in runs]
    return {
        "config": label,
        "seeds": ",".join(str(seed) for seed, _, _ in runs),
        "test_task_il_acc": round(statistics.fmean(task_il), 2),
        "test_task_il_ci95": ci95(task_il),
        "test_task_il_min": round(min(task_il), 2),
        "test_class_il_acc": round(statistics.fmean(class_il), 2),
        "test_class_il_ci95": ci95(class_il),
        "cpu_s": round(sum(r["cpu_seconds"] for _, r, _ in runs), 1),
        "command": command_of(runs[0][1]).replace(f"--seed {runs[0][0]}", "--seed N"),
    }


def ci95(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean (nan for one value)."""
    if len(values) < 2:
        return math.nan
    return round(
        float(scipy.stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))), 2
    )


def workers_block(root: Path) -> None:
    for kind in ("journal", "postgres"):
        rec = load(root, f"workers_{kind}")
        if rec is None:
            continue
        row = {
            "storage": kind,
            "trials": rec["trials"],
            "one_worker_wall_s": rec["one_worker_wall_seconds"],
            "two_workers_wall_s": rec["two_workers_wall_seconds"],
            "two_lost_none": rec["two_workers"]["lost_none"],
            "two_unique_numbers": rec["two_workers"]["unique_numbers"],
            "two_worker_processes": len(rec["two_workers"]["workers"]),
            "load_start": round(rec["load_start"]["loadavg"][0], 1),
        }
        if "duplicated_parameter_sets" in rec["two_workers"]:  # checked since the worker-seed fix (2026-12-06)
            row.update(
                two_duplicated_parameter_sets=rec["two_workers"]["duplicated_parameter_sets"],
                searched_keys=",".join(rec["two_workers"]["searched_keys"]),
            )
        if "sigkill" in rec:
            kill = rec["sigkill"]
            row.update(
                killed_trial_state=kill["killed_trial_state"],
                retry_states=",".join(kill["retry_states"]),
                running_left=kill["still_running"],
            )
        append_record(
            OUT, row, benchmark="parallel_workers", command=" ".join(rec["command"]).replace(str(root) + "/", "")
        )
        print(row)


def ddp_block(root: Path) -> None:
    one, two = load(root, "ddp_1proc"), load(root, "ddp_2proc")
    t1, t2 = load(root, "ddp_test_one_process"), load(root, "ddp_test_two_processes")
    if not (one and two and t1 and t2):
        raise FileNotFoundError("ddp records")
    m1 = metrics(root / "logs/ddp_check/test_one_process/metrics.json")
    m2 = metrics(root / "logs/ddp_check/test_two_processes/metrics.json")
    row = {
        "one_process_test_acc": round(m1["test/5w1s/acc"], 2),
        "one_process_ci95": round(m1["test/5w1s/acc_ci95"], 2),
        "two_processes_test_acc": round(m2["test/5w1s/acc"], 2),
        "two_processes_ci95": round(m2["test/5w1s/acc_ci95"], 2),
        "abs_diff": round(abs(m1["test/5w1s/acc"] - m2["test/5w1s/acc"]), 2),
        "within_tolerance": abs(m1["test/5w1s/acc"] - m2["test/5w1s/acc"])
        <= max(m1["test/5w1s/acc_ci95"], m2["test/5w1s/acc_ci95"]),
        "wall_ratio_2_over_1": round(two["wall_seconds"] / one["wall_seconds"], 2),
        "cpu_ratio_2_over_1": round(two["cpu_seconds"] / one["cpu_seconds"], 2),
        "exit": [one["exit_status"], two["exit_status"]],
    }
    append_record(
        OUT,
        row,
        benchmark="ddp_cpu",
        command=" ; ".join(command_of(r) for r in (one, two, t1, t2)),
        settings={"tolerance": "|diff| <= the larger 95% CI over 200 test episodes", "pinned": "both on one core"},
    )
    print(row)


def submitit_block(root: Path) -> None:
    rec = load(root, "submitit_local_2jobs")
    if rec is None:
        raise FileNotFoundError("submitit_local_2jobs.json")
    jobs = sorted((root / "logs/submitit_check").glob("[0-9]*/metrics.json"))
    row = {
        "exit_status": rec["exit_status"],
        "jobs_with_metrics": len(jobs),
        "class_il_acc": ",".join(f"{metrics(j).get('test/class_il/acc', math.nan):.1f}" for j in jobs),
        "wall_s": rec["wall_seconds"],
    }
    append_record(OUT, row, benchmark="submitit_local", command=command_of(rec))
    print(row)


if __name__ == "__main__":
    sys.exit(main())
