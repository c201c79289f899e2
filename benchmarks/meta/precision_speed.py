"""Training speed of one experiment under ``trainer.precision`` auto, bf16-mixed and 32-true, in one process.

Issue 23: on a CPU without native bf16 the experiments' old ``bf16-mixed`` trained ~10x slower than fp32.
This measures what each setting gives *on this machine*: the experiment's own data, model and learner
(``+experiment=omniglot/protonet_5w1s`` by default: 60-way 1-shot 5-query Conv4 episodes), trained by
Lightning with the run's throughput clock (``metalab.callbacks.TrainThroughput``, warm-up steps left out).
Settings alternate round by round so machine noise hits all alike; the record keeps every round, the
medians, what ``auto`` resolved to and why, and the environment report (CPU model and features); a
summary line (median episodes/s per setting) is appended to ``benchmarks/meta/records/precision_speed.jsonl``.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/meta/precision_speed.py --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir

from metalab.callbacks import TrainThroughput
from metalab.environment import environment_report
from metalab.precision import resolve_precision
from metalab.report.records import append_record

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ("auto", "bf16-mixed", "32-true")


def experiment_config(experiment: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"+experiment={experiment}", *overrides])


def episodes_per_second(cfg: Any, setting: str, steps: int, warmup: int) -> float:
    """Train ``steps + warmup`` steps of ``cfg`` at ``setting`` and return the clocked episodes/s."""
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    learner = hydra.utils.instantiate(cfg.learner, backbone=hydra.utils.instantiate(cfg.model))
    meter = TrainThroughput(warmup_steps=warmup)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[meter], deterministic=True, inference_mode=False,
                        precision=resolve_precision(setting, "cpu").precision)
    trainer.fit(learner, datamodule=datamodule)
    return meter.episodes_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="omniglot/protonet_5w1s")
    parser.add_argument("--steps", type=int, default=20, help="clocked training steps per round and setting")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the clock starts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the experiments' cpu_threads)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "meta" / "results" / "precision_speed.json",
                        help="the full record (every round); a summary line is appended to --records")
    parser.add_argument("--records", default="benchmarks/meta/records/precision_speed.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = experiment_config(args.experiment, [f"data.train_episodes={args.steps + args.warmup}"])
    auto = resolve_precision("auto", "cpu")
    print(f"auto resolves to {auto.precision} ({auto.reason})")
    rounds: dict[str, list[float]] = {s: [] for s in SETTINGS}
    start, load_before = time.perf_counter(), os.getloadavg()
    for r in range(args.rounds):
        for setting in SETTINGS:
            rounds[setting].append(episodes_per_second(cfg, setting, args.steps, args.warmup))
            print(f"round {r + 1}: {setting:>10}: {rounds[setting][-1]:.3f} episodes/s", flush=True)
    median = {s: statistics.median(v) for s, v in rounds.items()}
    record = {
        "experiment": args.experiment, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "threads": args.threads, "auto": auto.record(), "episodes_per_s": rounds, "median_episodes_per_s": median,
        "fp32_over_bf16": median["32-true"] / median["bf16-mixed"], "wall_seconds": time.perf_counter() - start,
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},  # what else was running
        "command": f"python benchmarks/meta/precision_speed.py --experiment {args.experiment} --steps {args.steps} "
                   f"--warmup {args.warmup} --rounds {args.rounds} --threads {args.threads}",
        "environment": environment_report(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    rows = [{"precision": s, "resolved": resolve_precision(s, "cpu").precision, "episodes_per_s": median[s]}
            for s in SETTINGS]
    append_record(args.records, rows, benchmark="precision_speed",
                  settings={k: record[k] for k in ("experiment", "steps", "warmup", "rounds", "threads")}
                  | {"load_average_1_5_15min": record["load_average_1_5_15min"]})
    cpu = record["environment"]["cpu"]["model"]
    print(f"\n{args.experiment}, {args.threads} thread(s), median of {args.rounds} rounds x {args.steps} steps, "
          f"CPU {cpu}\n| precision | episodes/s |\n|---|---|")
    for setting in SETTINGS:
        label = f"auto (-> {auto.precision})" if setting == "auto" else setting
        print(f"| {label} | {median[setting]:.3f} |")
    print(f"record: {args.out}")


if __name__ == "__main__":
    main()
