"""Self-healing training under injected faults, and what diagnosis costs per step (issue 35).

For each setting (a tiny Omniglot ProtoNet and a tiny Split MNIST with experience replay) and seed, one
process trains, side by side:

- ``clean``: no fault, diagnosis on (the default config); it must raise no alert;
- ``clean_off``: no fault, ``diagnosis=off``: the accuracy reference and the per-step time without diagnosis;
- ``nan_loss``, ``lr_x100``, ``corrupt_inputs``: one fault at ``--fault-step`` (metalab.callbacks.faults),
  diagnosis on; each must finish with an accuracy inside the clean runs' 95% CI, its diagnosis and action
  in its record (``alerts`` of metrics.json).

Per-step time is this process's CPU time from one training batch's start to the next one's (data, step,
every callback and logger), summed over the batches inside each epoch; ``clean`` and ``clean_off`` run
one after the other in this process on the same seed, in alternating order. Pin it to one core:

    taskset -c 0 python experiments/diagnosis/run.py --seeds 0 1 2

Writes one record per setting and variant to ``experiments/diagnosis/records/diagnosis.jsonl``
(:func:`metalab.report.records.append_record`); ``metalab tables`` turns them into the tables of
``experiments/diagnosis/results.md``. Runs go to ``logs/diagnosis/`` (git-ignored).
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
from hydra import compose, initialize_config_dir

from metalab.callbacks.faults import FaultInjection
from metalab.report.collect import t975
from metalab.report.records import append_record
from metalab.run import train

REPO = Path(__file__).resolve().parents[2]
RECORDS = "experiments/diagnosis/records/diagnosis.jsonl"
RUNS = Path(os.environ.get("METALAB_DIAGNOSIS_RUNS", REPO / "logs" / "diagnosis"))

SETTINGS: dict[str, dict[str, Any]] = {
    "omniglot_protonet": {
        "experiment": "omniglot/protonet_5w1s",
        "metric": "test/5w1s/acc",
        "overrides": [
            "trainer.precision=32-true",
            "data.train.way=10",
            "data.train.query=5",
            "data.train_episodes=75",
            "trainer.max_epochs=2",
            "+trainer.limit_val_batches=0",
            "data.test=[5w1s]",
            "data.test_episodes=150",
            "callbacks.progress_bar=null",
        ],
        "fault_step": 90,
    },
    "split_mnist_er": {
        "experiment": "split_mnist/er_200",
        "metric": "test/class_il/acc",
        "overrides": [
            "trainer.precision=32-true",
            "data.train_examples_per_task=2000",
            "data.test_examples_per_task=500",
            "learner.batches_per_step=10",
            "learner.plot=false",
            "callbacks.progress_bar=null",
        ],
        "fault_step": 500,  # the middle of task 2 (200 mini-batches of 10 per task, 20 Lightning batches of 10)
    },
}
FAULTS = {
    "nan_loss": "nan_loss_at_step",
    "lr_x100": "lr_multiplier_at_step",
    "corrupt_inputs": "corrupt_inputs_at_step",
}


class StepClock(L.Callback):
    """CPU seconds from one training batch's start to the next one's within an epoch (so the previous
    batch's step, callbacks and logging are all counted; the epoch-end evaluation is not)."""

    def __init__(self) -> None:
        self.seconds, self.batches, self._last = 0.0, 0, None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.process_time()
        if self._last is not None:
            self.seconds += now - self._last
            self.batches += 1
        self._last = now

    @property
    def per_batch(self) -> float:
        return self.seconds / self.batches if self.batches else float("nan")


def run_one(setting: str, variant: str, seed: int, fault_step: int, warmup: bool = False) -> dict[str, Any] | None:
    """Train (and test) one run in this process; ``warmup``: train only, to pay the process's one-off costs
    (allocator, caches, lazy imports) before anything is timed."""
    spec = SETTINGS[setting]
    out = RUNS / setting / (f"warmup_seed{seed}" if warmup else f"{variant}_seed{seed}")
    overrides = [
        f"+experiment={spec['experiment']}",
        f"seed={seed}",
        f"paths.output_dir={out}",
        *spec["overrides"],
        *(["test=false", "optimized_metric=null"] if warmup else []),
    ]
    if variant == "clean_off":
        overrides.append("diagnosis=off")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    clock = StepClock()
    extra: list[L.Callback] = [clock]
    if variant in FAULTS:
        extra.append(FaultInjection(**{FAULTS[variant]: fault_step}, seed=seed))
    wall = time.perf_counter()
    train(cfg, extra_callbacks=extra)
    if warmup:
        return None
    record = json.loads((out / "metrics.json").read_text())
    return {
        "setting": setting,
        "variant": variant,
        "seed": seed,
        "acc": record["metrics"][spec["metric"]],
        "alerts": record.get("alerts"),
        "steps": record["global_step"],
        "stopped": record["stopped"]["reason"],
        "cpu_per_batch": clock.per_batch,
        "batches": clock.batches,
        "wall_seconds": time.perf_counter() - wall,
        "own": record.get("diagnosis"),
    }


def collect_one(setting: str, variant: str, seed: int) -> dict[str, Any] | None:
    """A finished run's figures from its run folder (``--collect``): accuracy, alerts and the diagnosis's own
    hook time, but not the per-batch CPU time, which only a run in this process measures (NaN here)."""
    spec = SETTINGS[setting]
    path = RUNS / setting / f"{variant}_seed{seed}" / "metrics.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return {
        "setting": setting,
        "variant": variant,
        "seed": seed,
        "acc": record["metrics"][spec["metric"]],
        "acc_ci95_episodes": record["metrics"].get(spec["metric"] + "_ci95"),
        "alerts": record.get("alerts"),
        "steps": record["global_step"],
        "stopped": record["stopped"]["reason"],
        "cpu_per_batch": float("nan"),
        "batches": 0,
        "wall_seconds": float("nan"),
        "own": record.get("diagnosis"),
    }


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def summarise(setting: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: accuracy mean and CI, inside the clean CI or not, alerts, per-batch CPU time."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)

    def interval(group: list[dict[str, Any]]) -> tuple[float, float]:
        """Over seeds; with one seed, over that run's test episodes (the run's own 95% CI)."""
        if len(group) == 1 and group[0].get("acc_ci95_episodes") is not None:
            return group[0]["acc"], group[0]["acc_ci95_episodes"]
        return mean_ci([r["acc"] for r in group])

    clean_mean, clean_ci = interval(by_variant["clean"])
    rows = []
    for variant, group in by_variant.items():
        mean, ci = interval(group)
        alerts = [a for r in group for a in (r["alerts"] or [])]
        kinds = sorted(
            {f"{a['kind']} -> {a['action'].split(';')[0].split(' of step')[0].split(' to the')[0]}" for a in alerts}
        )
        row = {
            "setting": setting,
            "variant": variant,
            "seeds": len(group),
            "ci_over": "seeds" if len(group) > 1 else "test episodes",
            "acc_mean": round(mean, 2),
            "acc_ci95": round(ci, 2),
            "clean_ci_low": round(clean_mean - clean_ci, 2),
            "clean_ci_high": round(clean_mean + clean_ci, 2),
            "inside_clean_ci": bool(clean_mean - clean_ci <= mean <= clean_mean + clean_ci),
            "all_finished": all(r["steps"] > 0 and math.isfinite(r["acc"]) for r in group),
            "alerts": len(alerts),
            "runs_with_alerts": sum(bool(r["alerts"]) for r in group),
            "diagnosis": "; ".join(kinds) or "none",
            "cpu_ms_per_batch": round(1000 * statistics.fmean(r["cpu_per_batch"] for r in group), 3),
        }
        own = [r["own"] for r in group if r["own"] and r["own"]["batches"]]
        if own:  # the callback's own CPU time in its per-batch hook
            per_batch = statistics.fmean(o["hook_seconds"] / o["batches"] for o in own)
            row["hook_cpu_ms_per_batch"] = round(1000 * per_batch, 4)
        rows.append(row)
    on = [r["cpu_per_batch"] for r in by_variant["clean"]]
    off = [r["cpu_per_batch"] for r in by_variant.get("clean_off", [])]
    if off:
        ratios = [a / b for a, b in zip(on, off)]
        for row in rows:
            if row["variant"] == "clean":
                row["cpu_on_over_off"] = round(statistics.fmean(ratios), 4)
                row["cpu_on_over_off_per_seed"] = " ".join(f"{r:.3f}" for r in ratios)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--variants", nargs="+", default=["clean", "clean_off", *FAULTS], choices=["clean", "clean_off", *FAULTS]
    )
    parser.add_argument("--no-record", action="store_true", help="print, do not append to the records file")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: summarise the finished runs of logs/diagnosis (no per-batch CPU times)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    for setting in args.settings:
        if args.collect:
            runs = [r for seed in args.seeds for v in args.variants if (r := collect_one(setting, v, seed))]
            rows = summarise(setting, runs)
            for row in rows:
                print(json.dumps(row))
            if not args.no_record:
                append_record(
                    RECORDS,
                    rows,
                    benchmark="diagnosis",
                    settings={
                        "setting": setting,
                        "seeds": args.seeds,
                        "collected": True,
                        "fault_step": SETTINGS[setting]["fault_step"],
                        "overrides": SETTINGS[setting]["overrides"],
                        "experiment": SETTINGS[setting]["experiment"],
                    },
                )
            continue
        run_one(setting, "clean_off", args.seeds[0], 0, warmup=True)
        runs = []
        for seed in args.seeds:
            order = list(args.variants)
            if seed % 2 and "clean" in order and "clean_off" in order:  # alternate which of the two runs first
                i, j = order.index("clean"), order.index("clean_off")
                order[i], order[j] = order[j], order[i]
            for variant in order:
                result = run_one(setting, variant, seed, SETTINGS[setting]["fault_step"])
                print(
                    f"[diagnosis] {setting} {variant} seed {seed}: acc {result['acc']:.2f}, "
                    f"{len(result['alerts'] or [])} alert(s), {1000 * result['cpu_per_batch']:.2f} CPU-ms/batch"
                )
                runs.append(result)
        rows = summarise(setting, runs)
        for row in rows:
            print(json.dumps(row))
        if not args.no_record:
            append_record(
                RECORDS,
                rows,
                benchmark="diagnosis",
                settings={
                    "setting": setting,
                    "seeds": args.seeds,
                    "fault_step": SETTINGS[setting]["fault_step"],
                    "overrides": SETTINGS[setting]["overrides"],
                    "experiment": SETTINGS[setting]["experiment"],
                    "load_average_at_start": [round(x, 2) for x in load_before],
                },
            )


if __name__ == "__main__":
    main()
