"""Where a small model's training step spends its CPU time: our loop, Avalanche's, and plain loops.

On Split MNIST's MLP (784-100-100-10, batch 10) a step is about 0.3 ms of arithmetic, so the loop around
it decides the speed. This script trains one task of an experiment several ways on the *same*
mini-batches (our stream's seeded order): ``ours`` (``Trainer.fit`` as ``train.py`` builds it, one
mini-batch per Lightning batch: the loop before ``learner.batches_per_step``), ``ours_chunked`` (the
same with ``--chunk`` mini-batches per Lightning batch, the configured default), ``avalanche`` (its
``Naive`` strategy, handed our batches), ``plain_step`` (our step function,
:func:`~metalab.learners.continual.loop.continual_step`, in a ``for`` loop: the same work without
Lightning, the floor the issue names) and ``plain`` (a bare ``for`` loop: forward, cross-entropy,
backward, SGD step). Each side is timed in CPU seconds of this process (``time.process_time``), which
stays meaningful on a core shared with other jobs, where wall time does not; ``--rounds`` alternates the
sides and keeps each side's median. Then each is run again under ``cProfile`` with the same CPU clock,
switched on for the timed epoch only (set-up, config composition and evaluation stay out), and the
profile's own time is summed by package (torch's operators, lightning, avalanche, torch.utils.data,
torchmetrics, metalab, the rest), so the table says what the extra time over the plain loop is made of.

    python benchmarks/continual/step_profile.py --experiment split_mnist/finetune --batches 400 --rounds 3
    python benchmarks/continual/step_profile.py --experiment permuted_mnist/finetune --batches 100 --rounds 3

Appends its figures to ``benchmarks/continual/records/step_profile.jsonl``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from common import EpochTimer, experiment_config, our_batch_order

from metalab.learners.continual.loop import PlainLearner, continual_step
from metalab.learners.continual.methods import StreamInfo
from metalab.report.records import append_record

RECORDS = "benchmarks/continual/records/step_profile.jsonl"
PACKAGES = (
    "lightning",
    "avalanche",
    "torchmetrics",
    "torch/utils/data",
    "torch/optim",
    "torch/autograd",
    "torch/nn",
    "metalab",
    "hydra",
    "omegaconf",
)


def build(experiment: str, batches: int, seed: int, batches_per_step: int = 1):
    cfg = experiment_config(
        experiment,
        [
            f"seed={seed}",
            "data.n_tasks=1",
            "data.epochs_per_task=1",
            f"data.train_examples_per_task={batches * 10}",
            "data.batch_size=10",
            "data.test_examples_per_task=10",
            "learner.evaluate_initial=false",
            "cpu_threads=1",
            f"learner.batches_per_step={batches_per_step}",
        ],
    )
    L.seed_everything(seed, workers=True)
    stream = hydra.utils.instantiate(cfg.data)
    stream.setup("fit")
    model = hydra.utils.instantiate(cfg.model)
    return cfg, stream, model


class ProfileEpoch(L.Callback):
    """Switches ``profile`` on for the training epoch only."""

    def __init__(self, profile: cProfile.Profile | None) -> None:
        self.profile = profile

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.profile is not None:
            self.profile.enable()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.profile is not None:
            self.profile.disable()


def run_ours(
    experiment: str, batches: int, seed: int, profile: cProfile.Profile | None = None, batches_per_step: int = 1
) -> tuple[float, int]:
    """``Trainer.fit`` as train.py builds it (its callbacks aside), ``batches_per_step`` mini-batches per
    Lightning batch; the step count is of mini-batches (optimiser steps)."""
    cfg, stream, model = build(experiment, batches, seed, batches_per_step)
    learner = hydra.utils.instantiate(cfg.learner, backbone=model, plot=False)
    timer = EpochTimer()
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        precision="32-true",
        callbacks=[ProfileEpoch(profile), timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **stream.trainer_arguments(),
    )
    trainer.fit(learner, datamodule=stream)
    return timer.cpu_seconds[0], trainer.global_step


def run_avalanche(
    experiment: str, batches: int, seed: int, profile: cProfile.Profile | None = None
) -> tuple[float, int]:
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive
    from common import avalanche_benchmark

    cfg, stream, model = build(experiment, batches, seed)
    bench = avalanche_benchmark(stream)

    class CpuTimer(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.cpu_seconds, self.start, self.iterations = 0.0, 0.0, 0

        def before_training_epoch(self, strategy, *args, **kwargs):
            if profile is not None:
                profile.enable()
            self.start = time.process_time()

        def after_training_iteration(self, strategy, *args, **kwargs):
            self.iterations += 1

        def after_training_epoch(self, strategy, *args, **kwargs):
            self.cpu_seconds = time.process_time() - self.start
            if profile is not None:
                profile.disable()

    timer = CpuTimer()
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=float(cfg.learner.optimizer.lr)),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=10,
        train_epochs=1,
        eval_mb_size=100,
        device="cpu",
        plugins=[our_batch_order(stream), timer],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.train(bench.train_stream[0], num_workers=0)
    return timer.cpu_seconds, timer.iterations


def _timed(epoch: Callable[[], int], profile: cProfile.Profile | None) -> tuple[float, int]:
    """CPU seconds of ``epoch()`` and the steps it returns, profiled over that epoch alone if asked."""
    if profile is not None:
        profile.enable()
    start = time.process_time()
    steps = epoch()
    seconds = time.process_time() - start
    if profile is not None:
        profile.disable()
    return seconds, steps


def run_plain(experiment: str, batches: int, seed: int, profile: cProfile.Profile | None = None) -> tuple[float, int]:
    cfg, stream, model = build(experiment, batches, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg.learner.optimizer.lr))
    model.train()

    def epoch() -> int:
        n = 0
        for batch in stream.task_train_loader(0, epoch=0):
            loss = F.cross_entropy(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n += 1
        return n

    return _timed(epoch, profile)


def run_plain_step(
    experiment: str, batches: int, seed: int, profile: cProfile.Profile | None = None
) -> tuple[float, int]:
    """The same work as ours without Lightning: our step function in a ``for`` loop over the same batches."""
    cfg, stream, model = build(experiment, batches, seed)
    method = hydra.utils.instantiate(cfg.learner.method)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg.learner.optimizer.lr))
    info = StreamInfo(
        stream.n_tasks,
        stream.classes_per_task,
        stream.train_examples(),
        stream.train_tasks[0].x[:1],
        stream.n_classes,
        stream.scenarios,
    )
    learner = PlainLearner(model, optimizer, [(t.x, t.y) for t in stream.train_tasks], info)
    method.setup(info)
    method.before_task(learner, 0)
    model.train()

    def epoch() -> int:
        n = 0
        for batch in stream.task_train_loader(0, epoch=0):
            continual_step(learner, method, batch, 0, optimizer, step=n)
            n += 1
        return n

    return _timed(epoch, profile)


SIDES: dict[str, Callable[..., tuple[float, int]]] = {
    "ours": run_ours,
    "ours_chunked": run_ours,
    "avalanche": run_avalanche,
    "plain_step": run_plain_step,
    "plain": run_plain,
}


def by_package(profile: cProfile.Profile) -> dict[str, float]:
    """The profile's own (exclusive) time summed by package; C functions count as ``torch ops`` when they
    are torch's built-ins, else ``builtins``."""
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():
        if filename == "~":
            key = (
                "torch ops"
                if "torch" in name or "_C." in name or "method '" in name and "Tensor" in name
                else "builtins"
            )
        else:
            path = filename.replace("\\", "/")
            key = next((p for p in PACKAGES if f"/{p}/" in path), "other python")
        totals[key] += tottime
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="split_mnist/finetune")
    parser.add_argument("--batches", type=int, default=600, help="mini-batches of 10 in the timed task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    parser.add_argument(
        "--chunk",
        type=int,
        default=50,
        help="learner.batches_per_step of the ours_chunked side (ours: 1, the loop before chunks)",
    )
    parser.add_argument("--top", type=int, default=12, help="functions of our side's profile to print")
    parser.add_argument(
        "--rounds", type=int, default=1, help="unprofiled timings per side, alternating sides; the median is the figure"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    timings: dict[str, list[float]] = {side: [] for side in args.sides}
    steps_of: dict[str, int] = {}
    for _ in range(args.rounds):  # alternate the sides, so a change in the machine's load hits them alike
        for side in args.sides:
            extra = {"batches_per_step": args.chunk} if side == "ours_chunked" else {}
            cpu, steps_of[side] = SIDES[side](args.experiment, args.batches, args.seed, **extra)
            timings[side].append(cpu)
    for side in args.sides:
        extra = {"batches_per_step": args.chunk} if side == "ours_chunked" else {}
        cpu, steps = statistics.median(timings[side]), steps_of[side]  # unprofiled: the speed figure
        profile = cProfile.Profile(time.process_time)
        SIDES[side](args.experiment, args.batches, args.seed, profile, **extra)
        packages = by_package(profile)
        total = sum(packages.values())
        row = {
            "side": side,
            "steps": steps,
            "cpu_ms_per_step": round(1000 * cpu / steps, 3),
            "cpu_ms_per_step_rounds": [round(1000 * t / steps, 3) for t in timings[side]],
        }
        row.update(
            {
                f"profile_{k.replace(' ', '_').replace('/', '_')}_pct": round(100 * v / total, 1)
                for k, v in sorted(packages.items(), key=lambda kv: -kv[1])
            }
        )
        rows.append(row)
        print(
            f"{side}: {row['cpu_ms_per_step']:.3f} CPU ms/step over {steps} steps; profile by package: "
            + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(packages.items(), key=lambda kv: -kv[1])),
            flush=True,
        )
        if side.startswith("ours"):
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    base = {r["side"]: r["cpu_ms_per_step"] for r in rows}
    for row in rows:
        if "plain" in base:
            row["x_plain"] = round(row["cpu_ms_per_step"] / base["plain"], 3)
        if "avalanche" in base:
            row["x_avalanche"] = round(row["cpu_ms_per_step"] / base["avalanche"], 3)
    print("| side | CPU ms / step | x plain | x Avalanche |\n|---|---|---|---|")
    for row in rows:
        ratios = f"{row.get('x_plain', '')} | {row.get('x_avalanche', '')}"
        print(f"| {row['side']} | {row['cpu_ms_per_step']:.3f} | {ratios} |")
    append_record(
        RECORDS,
        rows,
        settings={
            "experiment": args.experiment,
            "batches": args.batches,
            "seed": args.seed,
            "batch_size": 10,
            "threads": 1,
            "precision": "32-true",
            "chunk": args.chunk,
            "rounds": args.rounds,
        },
    )


if __name__ == "__main__":
    main()
