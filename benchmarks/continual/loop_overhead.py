"""Our Lightning continual loop vs a plain PyTorch loop doing the same work, per batch, for every method.

The measured epoch is the *second* task of a 2-task Split CIFAR-10 stream (reduced ResNet-18, batch 32),
so every method runs in its expensive state: EWC with its penalty (Fisher of task 0), ER and DER++ with a
full buffer (500 of the 1,280 examples seen), LwF with the previous model, progressive nets with two
columns. Our side is ``Trainer.fit`` exactly as ``train.py`` builds it from ``+experiment=split_cifar10/<m>``
(timed by a callback over the whole epoch: data loading, hooks and logging included). The plain side is a
``for`` loop over the same pre-loaded tensors that calls the very step our learner calls
(:func:`metalab.learners.continual.loop.continual_step`: forward on ``[batch; replay]``, loss, backward,
SGD step, the method's hooks) with a :class:`~metalab.learners.continual.loop.PlainLearner` (the same
network and method objects, a bare ``torch.optim.SGD``): the ratio is Lightning's cost around one step.
The two sides alternate ``--repeats`` times; the table gives the minimum of each side (the machine is
shared, so the least-disturbed repeat is the best estimate) and the ratio ours/plain.

    python benchmarks/continual/loop_overhead.py --batches 40 --repeats 3
    python benchmarks/continual/loop_overhead.py --methods finetune --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from common import RUNS, EpochTimer, experiment_config, write_json

from metalab.learners.continual.loop import PlainLearner, continual_step
from metalab.report.records import append_record

METHODS = ["finetune", "joint", "ewc", "online_ewc", "er_500", "derpp_500", "lwf", "progressive"]


def build(name: str, batches: int, batch_size: int, precision: str, threads: int):
    overrides = [
        "data.n_tasks=2",
        "data.epochs_per_task=1",
        f"data.train_examples_per_task={batches * batch_size}",
        f"data.batch_size={batch_size}",
        "data.test_examples_per_task=50",
        "learner.evaluate_initial=false",
        f"trainer.precision={precision}",
        f"cpu_threads={threads}",
    ]
    if name in ("ewc", "online_ewc"):
        overrides.append("learner.method.fisher_examples=256")
    cfg = experiment_config(f"split_cifar10/{name}", overrides)
    L.seed_everything(0, workers=True)
    stream = hydra.utils.instantiate(cfg.data)
    learner = hydra.utils.instantiate(cfg.learner, backbone=hydra.utils.instantiate(cfg.model), plot=False)
    return cfg, stream, learner


def time_ours(cfg, stream, learner) -> tuple[float, int]:
    """Seconds per batch of the second task's epoch under Trainer.fit."""
    timer = EpochTimer()
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        **stream.trainer_arguments(),
    )
    trainer.fit(learner, datamodule=stream)
    return timer.seconds[1] / timer.batches[1], timer.batches[1]


def time_plain(learner, stream, lr: float, batch_size: int, precision: str) -> float:
    """Seconds per batch of a bare loop over task 1 with the learner's network and method state."""
    net, method = learner.net, learner.method
    net.train()
    plain = PlainLearner(
        net,
        torch.optim.SGD(net.parameters(), lr=lr),
        [(p.x, p.y) for p in stream.train_tasks],
        learner.stream_info,
        channels_last=True,
    )
    part = stream.task_train_dataset(1)
    order = torch.randperm(len(part), generator=torch.Generator().manual_seed(1))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    n_batches = len(part) // batch_size
    start = time.perf_counter()
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        with autocast:  # as Lightning's precision plugin wraps training_step
            continual_step(
                plain,
                method,
                {"x": part.x[idx], "y": part.y[idx], "task": part.task[idx]},
                task=1,
                optimizer=plain.optimizer,
                step=b,
            )
    return (time.perf_counter() - start) / n_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--batches", type=int, default=40, help="batches per task (the timed epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="32-true", help="trainer.precision for both sides (bf16-mixed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RUNS / "loop_overhead.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    results = {}
    print(
        f"reduced ResNet-18, batch {args.batch_size}, {args.batches} batches, precision {args.precision}, "
        f"{args.threads} thread(s); min of {args.repeats} alternating repeats"
    )
    print("| method | ours ms/batch | plain ms/batch | ours / plain |")
    print("|---|---|---|---|")
    for name in args.methods:
        ours, plain = [], []
        for _ in range(args.repeats):
            cfg, stream, learner = build(name, args.batches, args.batch_size, args.precision, args.threads)
            seconds, _ = time_ours(cfg, stream, learner)
            ours.append(seconds)
            plain.append(time_plain(learner, stream, float(cfg.learner.optimizer.lr), args.batch_size, args.precision))
        o, p = min(ours), min(plain)  # shared machine: the least-disturbed repeat of each side
        results[name] = {"ours_s_per_batch": ours, "plain_s_per_batch": plain, "ratio": o / p}
        print(f"| {name} | {o * 1000:.1f} | {p * 1000:.1f} | {o / p:.3f} |", flush=True)
        write_json(
            args.out,
            {
                "precision": args.precision,
                "threads": args.threads,
                "batches": args.batches,
                "batch_size": args.batch_size,
                "results": results,
            },
        )
    append_record(
        "benchmarks/continual/records/loop_overhead.jsonl",
        [
            {
                "method": name,
                "ours_ms_per_batch": min(r["ours_s_per_batch"]) * 1000,
                "plain_ms_per_batch": min(r["plain_s_per_batch"]) * 1000,
                "ratio": r["ratio"],
            }
            for name, r in results.items()
        ],
        settings={
            "precision": args.precision,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
        },
    )


if __name__ == "__main__":
    main()
