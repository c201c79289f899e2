"""What the self-diagnosis costs per training step on the tiny studies' own runs, and whether it stays quiet
on them, measured side by side in one process (issue 35: at most 2% slower per step, no false alarm).

For each chosen run of a study's ``tiny`` budget (its exact config: :func:`metalab.report.study.compose_run`),
this process trains the run with diagnosis off and on, ``--pairs`` times, in the order off, on, on, off,
off, on, ... (ABBA: a drift of the machine's load cancels within each two pairs). In each run it times,
in this process's CPU seconds (``time.process_time``) and in wall seconds, what the diagnosis adds to:
every training batch from the first callback's ``on_train_batch_start`` to the last callback's
``on_train_batch_end`` (the learner's step, every callback's batch hooks, the diagnosis's checks), plus the
callbacks' ``on_train_start``, ``on_train_epoch_start``, ``on_train_epoch_end`` and ``on_train_end`` (where
the diagnosis takes its first and per-task snapshots and looks for forgetting). Data loading, validation,
the test and start-up are counted in neither: the ratio is over the part of training the diagnosis could
slow down, so it is a conservative figure.

    taskset -c 0 python experiments/diagnosis/overhead.py --study experiments/split_mnist.yaml --pairs 6
    taskset -c 0 python experiments/diagnosis/overhead.py --study experiments/omniglot_fewshot.yaml \\
        --labels protonet_5w1s matching_5w1s --pairs 4

Writes one record per study to ``experiments/diagnosis/records/overhead.jsonl``: per run label, the mean
CPU and wall seconds per step off and on, the ratio on/off of CPU seconds per step (mean of the per-pair
ratios and its 95% t-interval), the diagnosis hook's own CPU seconds per step and their share of a step
without diagnosis (``hook_share_of_step``), and the alerts the runs
with diagnosis on raised (the clean runs' false alarms: must be none); the record carries the CPU and the
load average at its end, and ``settings.load_average_at_start`` the one at its start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import open_dict

import metalab.run as run_module
from metalab.report.collect import t975
from metalab.report.records import append_record
from metalab.report.study import compose_run, load_study

REPO = Path(__file__).resolve().parents[2]
RECORDS = "experiments/diagnosis/records/overhead.jsonl"
RUNS = Path(os.environ.get("METALAB_DIAGNOSIS_RUNS", REPO / "logs" / "diagnosis_overhead"))
TRAINING_HOOKS = ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_train_end")


class Clock:
    """CPU and wall seconds accumulated between an opening and a closing callback of the same hooks."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.batches = 0
        self._started: tuple[float, float] | None = None

    def open(self) -> None:
        self._started = (time.process_time(), time.perf_counter())

    def close(self, batch: bool = False) -> None:
        if self._started is not None:
            self.cpu += time.process_time() - self._started[0]
            self.wall += time.perf_counter() - self._started[1]
            self.batches += batch
        self._started = None


class Opening(L.Callback):
    """First in the trainer's callback list: starts the clock of each timed hook."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        for hook in TRAINING_HOOKS:
            setattr(self, hook, lambda *args, **kwargs: self.clock.open())

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.clock.open()


class Closing(L.Callback):
    """Last in the list (before the checkpoint callbacks, which Lightning moves to the end; the same in
    both arms): stops the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        for hook in TRAINING_HOOKS:
            setattr(self, hook, lambda *args, **kwargs: self.clock.close())

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.clock.close(batch=True)


def timed_build(clock: Clock):
    """``metalab.run.build_run`` with the clock's callbacks put first and last in the trainer's list."""
    original = run_module.build_run

    def build(*args: Any, **kwargs: Any):
        objects = original(*args, **kwargs)
        objects.trainer.callbacks.insert(0, Opening(clock))
        objects.trainer.callbacks.append(Closing(clock))
        return objects

    return original, build


def train_once(study, run, diagnosis: bool, out: Path) -> dict[str, Any]:
    """Train ``run`` (no test) with diagnosis on or off; its timed seconds, steps and alerts."""
    cfg = compose_run(study, run)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(out.parent / "logs")
        cfg.test = False
        cfg.optimized_metric = None
        if not diagnosis:
            cfg.diagnosis = None
    clock = Clock()
    original, build = timed_build(clock)
    run_module.build_run = build
    try:
        run_module.train(cfg)
    finally:
        run_module.build_run = original
    record = json.loads((out / "metrics.json").read_text())
    steps = int(record["global_step"])
    return {
        "cpu_per_step": clock.cpu / steps,
        "wall_per_step": clock.wall / steps,
        "steps": steps,
        "batches": clock.batches,
        "alerts": record.get("alerts") or [],
        "hook_per_step": (record.get("diagnosis") or {}).get("hook_seconds", 0.0) / steps,
    }


def interval(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, half


def measure(study, run, pairs: int) -> dict[str, Any]:
    """``pairs`` off/on pairs of ``run`` in ABBA order; the figures of one row."""
    arms: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    folder = RUNS / study.name / run.label.replace("/", "_")
    train_once(study, run, True, folder / "warmup")  # one-off costs (lazy imports, data caches) before timing
    for pair in range(pairs):
        order = ("off", "on") if pair % 2 == 0 else ("on", "off")
        for arm in order:
            arms[arm].append(train_once(study, run, arm == "on", folder / f"{arm}{pair}"))
    ratios = [on["cpu_per_step"] / off["cpu_per_step"] for on, off in zip(arms["on"], arms["off"])]
    ratio, half = interval(ratios)
    alerts = [a for r in arms["on"] for a in r["alerts"]]
    return {
        "study": study.name,
        "label": run.label,
        "seed": run.seed,
        "pairs": pairs,
        "steps_per_run": arms["on"][0]["steps"],
        "cpu_ms_per_step_off": round(1000 * statistics.fmean(r["cpu_per_step"] for r in arms["off"]), 4),
        "cpu_ms_per_step_on": round(1000 * statistics.fmean(r["cpu_per_step"] for r in arms["on"]), 4),
        "wall_ms_per_step_off": round(1000 * statistics.fmean(r["wall_per_step"] for r in arms["off"]), 4),
        "wall_ms_per_step_on": round(1000 * statistics.fmean(r["wall_per_step"] for r in arms["on"]), 4),
        "hook_cpu_ms_per_step": round(1000 * statistics.fmean(r["hook_per_step"] for r in arms["on"]), 4),
        # the diagnosis's own CPU time (measured inside its hooks) over a step without it: steadier than the
        # ratio of two runs' times on a loaded machine, and what the 2% bound is about
        "hook_share_of_step": round(
            statistics.fmean(r["hook_per_step"] for r in arms["on"])
            / statistics.fmean(r["cpu_per_step"] for r in arms["off"]),
            4,
        ),
        "cpu_on_over_off": round(ratio, 4),
        "cpu_on_over_off_ci95": round(half, 4),
        "per_pair": " ".join(f"{r:.3f}" for r in ratios),
        "within_2pct": bool(ratio <= 1.02),
        "alerts": len(alerts),
        "alert_kinds": "; ".join(sorted({a["kind"] for a in alerts})) or "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="a study file, e.g. experiments/split_mnist.yaml")
    parser.add_argument("--labels", nargs="*", help="run labels of the study (default: all but Avalanche's)")
    parser.add_argument("--seed", type=int, default=0, help="the study seed whose runs are timed")
    parser.add_argument("--pairs", type=int, default=4, help="off/on pairs per run (ABBA order)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to the records file")
    args = parser.parse_args()
    study = load_study(Path(args.study), "tiny", None)
    runs = [r for r in study.runs if not r.is_avalanche and r.seed == args.seed]
    if args.labels:
        runs = [r for r in runs if r.label in args.labels]
    load_before = os.getloadavg()
    rows = []
    for run in runs:
        row = measure(study, run, args.pairs)
        print(
            f"[overhead] {row['label']}: CPU per step on/off {row['cpu_on_over_off']:.4f} "
            f"+- {row['cpu_on_over_off_ci95']:.4f} ({row['cpu_ms_per_step_off']:.3f} -> "
            f"{row['cpu_ms_per_step_on']:.3f} ms; hook {row['hook_cpu_ms_per_step']:.4f} ms, "
            f"{100 * row['hook_share_of_step']:.2f}% of a step), "
            f"{row['alerts']} alert(s)",
            flush=True,
        )
        rows.append(row)
    if not args.no_record:
        append_record(
            RECORDS,
            rows,
            benchmark="diagnosis_overhead",
            settings={
                "study": study.name,
                "budget": "tiny",
                "seed": args.seed,
                "pairs": args.pairs,
                "load_average_at_start": [round(x, 2) for x in load_before],
            },
        )


if __name__ == "__main__":
    main()
