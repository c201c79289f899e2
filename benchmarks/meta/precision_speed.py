"""Is ``trainer.precision: auto`` as fast as the faster of fp32 and bf16, workload by workload? (issue 31)

For each workload (the Conv4 ProtoNet on Omniglot, the Permuted MNIST MLP, the CartPole ES policy search),
in one process: CPU seconds per training step in fp32 and in bf16-mixed, alternating round by round so that
machine noise hits both alike (``metalab.precision.seconds_per_step``: copies of the run's own learner and
data module, Lightning's public hooks), then what ``auto`` chooses for that run (``measure_precision`` with
an empty cache, exactly as ``train.py`` calls it; a learner with ``fixed_precision`` gets it unmeasured).
``auto`` is within 5 % when its choice's median time is at most 1.05x the faster median. One record per
call, appended to ``benchmarks/meta/records/precision_speed.jsonl``, CPU and load average included.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/meta/precision_speed.py --rounds 3 --steps 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir

from metalab.precision import BF16, FP32, measure_precision, resolve_precision, seconds_per_step
from metalab.report.records import append_record, repo_root

WORKLOADS = {  # name: (experiment, overrides that keep a step the run's own but the data small)
    "protonet_conv4": ("omniglot/protonet_5w1s", []),
    "permuted_mnist_mlp": ("permuted_mnist/finetune", []),
    "cartpole_es_policy": ("es/cartpole_openai_es", []),
}


def build(experiment: str, overrides: list[str]) -> tuple[Any, Any]:
    with initialize_config_dir(config_dir=str(repo_root() / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+experiment={experiment}", *overrides])
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    learner = hydra.utils.instantiate(cfg.learner, backbone=hydra.utils.instantiate(cfg.model))
    return learner, datamodule


def measure(name: str, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    experiment, overrides = WORKLOADS[name]
    learner, datamodule = build(experiment, overrides)
    seconds: dict[str, list[float]] = {FP32: [], BF16: []}
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        for setting in (FP32, BF16):
            seconds[setting].append(seconds_per_step(learner, datamodule, setting, steps, warmup))
    median = {s: statistics.median(v) for s, v in seconds.items()}
    with tempfile.TemporaryDirectory() as cache:
        auto = measure_precision(resolve_precision("auto", "cpu"), learner, datamodule, cache=Path(cache) / "p.json")
    faster = min(median, key=median.get)
    return {
        "workload": name,
        "experiment": experiment,
        "fp32_s_per_step": median[FP32],
        "bf16_s_per_step": median[BF16],
        "bf16_speedup": median[FP32] / median[BF16],
        "faster": faster,
        "auto_chose": auto.precision,
        "auto_over_faster": median[auto.precision] / median[faster],
        "auto_within_5pct": median[auto.precision] <= 1.05 * median[faster],
        "auto_reason": auto.reason,
        "cpu_seconds": time.process_time() - cpu_start,
        "wall_seconds": time.perf_counter() - wall_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="clocked training steps per round and setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--records", default="benchmarks/meta/records/precision_speed.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []
    for name in args.workloads:
        rows.append(measure(name, args.rounds, args.steps, args.warmup))
        row = rows[-1]
        print(
            f"{name}: fp32 {row['fp32_s_per_step']:.4f} s/step, bf16 {row['bf16_s_per_step']:.4f} s/step "
            f"(bf16 {row['bf16_speedup']:.2f}x), auto -> {row['auto_chose']} ({row['auto_over_faster']:.3f}x the "
            f"faster)",
            flush=True,
        )
    append_record(
        args.records,
        rows,
        benchmark="precision_auto",
        settings={
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "load_average_before": list(load_before),
        },
    )


if __name__ == "__main__":
    main()
