"""Ours vs Avalanche (avalanche-lib 0.6.0) on exactly the same work, in one run.

For each seed and each shared method (ours <-> Avalanche: finetune <-> Naive, ewc <-> EWC(separate),
er_500 <-> Replay(mem 500), lwf <-> LwF) both sides get the same stream tensors (our data module, same
subsets), the same backbone built from the same config right after the same ``seed_everything``, the
same SGD learning rate, batch size and epochs per task. Both are evaluated by the same function after
every task (class-IL argmax; task-IL masking to the task's classes). Penalty weights are converted so
the formulas match: Avalanche's EWC adds ``lambda * sum F (theta - theta*)^2`` (ours ``lambda/2``) and
its LwF ``alpha * KL`` (ours ``alpha * T^2 * KL``). What still differs is each library's own design:
Avalanche's EWC importance is the squared mini-batch mean gradient (ours the exact per-sample Fisher),
its Replay buffer is experience-balanced (ours reservoir) and interleaves a memory mini-batch; and where
an experiment sets ``learner.method.update: proximal`` (Split CIFAR-10 EWC), our EWC applies its penalty
as the exact proximal step after each SGD step while Avalanche adds it to the loss (same objective,
different update rule; see ``metalab.learners.continual.methods.EWC``). With ``trainer.precision=bf16-mixed``
ours runs under Lightning's bf16 autocast and Avalanche's training and evaluation run inside the same
``torch.autocast("cpu", dtype=torch.bfloat16)`` (Avalanche has no CPU mixed-precision option of its own).
By default (``--batch-order ours``) Avalanche's Naive, EWC and LwF train on the very mini-batches ours
sees, in the same order (a plugin hands its epoch loop our stream's seeded batches), so shuffling noise
drops out of the comparison; Replay keeps its own loader, whose interleaved memory batches are part of
the method. ``--batch-order avalanche`` lets Avalanche shuffle with its own generator.

    python benchmarks/continual/avalanche_side_by_side.py --suite split_mnist --seeds 0 1 2
    python benchmarks/continual/avalanche_side_by_side.py --suite permuted_mnist --seeds 0 1 2 \
        --methods finetune ewc er_500 er_500_task_end     # Avalanche's own PermutedMNIST generator
    python benchmarks/continual/avalanche_side_by_side.py --suite split_cifar10 --seeds 0 1 2 \
        --out logs/continual/avalanche_side_by_side_cifar_e5      # the suite's budget (base.yaml)
    python benchmarks/continual/avalanche_side_by_side.py --suite split_cifar10 --seeds 0 --methods finetune lwf \
        --out logs/continual/avalanche_side_by_side_cifar data.epochs_per_task=1 trainer.precision=32-true

``er_500_task_end`` is our ER with Avalanche's buffer policy (``learner.method.fill=task_end``), shown
beside our default reservoir ER against the same Avalanche Replay run; ``lwf_running_teacher`` is our LwF
with Mammoth's teacher (``learner.method.teacher_bn=running``: the copy of the previous model normalises
with its stored batch-norm statistics; our default and Avalanche's copy use each batch's statistics),
against the same Avalanche LwF run.

On ``--suite permuted_mnist`` Avalanche's side trains on the experiences of its own ``PermutedMNIST``
generator (same seed, so the same permutations; cut to our per-task subsets; every image checked equal to
ours: ``common.avalanche_permuted_mnist``), with the same MLP, and both sides are scored domain-IL.

Writes ``<out>/<suite>_seed<k>.json`` per seed, prints a table (mean +- std over seeds) and appends its
figures to ``benchmarks/continual/records/avalanche_side_by_side_<suite>.jsonl`` (command, commit, date, machine:
:func:`metalab.report.records.append_record`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from common import (
    RUNS,
    EpochTimer,
    avalanche_benchmark,
    avalanche_permuted_mnist,
    avalanche_strategy,
    evaluate_row,
    experiment_config,
    our_batch_order,
    summary_from_rows,
    write_json,
)

from metalab.precision import resolve_precision
from metalab.report.records import append_record

PAIRS = {"finetune": "Naive", "ewc": "EWC", "er_500": "Replay", "lwf": "LwF"}
# Our variants run against the same Avalanche strategy as their base experiment (its run is shared):
# er_500 with Avalanche's buffer policy (task-balanced subsets stored at task ends, not a reservoir).
VARIANTS = {
    "er_500_task_end": ("er_500", ["learner.method.fill=task_end"]),
    # lwf whose frozen teacher normalises with its stored statistics, as Mammoth's LwF does
    "lwf_running_teacher": ("lwf", ["learner.method.teacher_bn=running"]),
}
METHODS = [*PAIRS, *VARIANTS]


def experiment_of(name: str) -> tuple[str, list[str]]:
    """Our experiment name and extra overrides for a method of this benchmark."""
    return VARIANTS.get(name, (name, []))


def run_ours(suite: str, name: str, seed: int, extra: list[str]) -> dict[str, Any]:
    experiment, overrides = experiment_of(name)
    cfg = experiment_config(f"{suite}/{experiment}", [f"seed={seed}", *overrides, *extra])
    L.seed_everything(seed, workers=True)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    stream = hydra.utils.instantiate(cfg.data)
    learner = hydra.utils.instantiate(cfg.learner, backbone=hydra.utils.instantiate(cfg.model), plot=False)
    timer = EpochTimer()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator")).precision
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        precision=precision,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        **stream.trainer_arguments(),
    )
    start = time.perf_counter()
    trainer.fit(learner, datamodule=stream)
    wall = time.perf_counter() - start
    matrices = {s: learner.accuracy[s].compute() for s in learner.scenarios}
    rows = [{s: matrices[s][i + 1].tolist() for s in matrices} for i in range(stream.n_tasks)]
    initial = {s: matrices[s][0].tolist() for s in matrices}
    return {
        "summary": summary_from_rows(rows, initial),
        "epoch_seconds": timer.seconds,
        "epoch_cpu_seconds": timer.cpu_seconds,
        "batches_per_epoch": timer.batches,
        "wall_seconds": wall,
    }


def run_avalanche(suite: str, name: str, seed: int, extra: list[str], batch_order: str = "ours") -> dict[str, Any]:
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EvaluationPlugin

    cfg = experiment_config(f"{suite}/{name}", [f"seed={seed}", *extra])
    L.seed_everything(seed, workers=True)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    stream = hydra.utils.instantiate(cfg.data)
    stream.setup("fit")
    model = hydra.utils.instantiate(cfg.model)  # same RNG state as ours: same initial weights
    bench = (
        avalanche_permuted_mnist(stream, seed, RUNS / "avalanche_mnist")
        if suite == "permuted_mnist"
        else avalanche_benchmark(stream)
    )

    class Timer(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._start = self._cpu_start = 0.0

        def before_training_epoch(self, strategy, *args, **kwargs):
            self._start, self._cpu_start = time.perf_counter(), time.process_time()

        def after_training_epoch(self, strategy, *args, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append(time.process_time() - self._cpu_start)

    timer = Timer()
    plugins = [timer, our_batch_order(stream)] if batch_order == "ours" and name != "er_500" else [timer]
    optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg.learner.optimizer.lr))
    common = dict(
        model=model,
        optimizer=optimizer,
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=int(cfg.data.batch_size),
        train_epochs=int(cfg.data.epochs_per_task),
        eval_mb_size=int(cfg.data.eval_batch_size),
        device="cpu",
        plugins=plugins,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy = avalanche_strategy(name, cfg.learner.method, **common)
    # The same mixed precision as Lightning's bf16-mixed plugin gives ours. One context spans many
    # optimiser steps here, so autocast's cache of bf16 weight copies must be off: with it, every
    # forward after the first reuses the first step's weights (the model then never learns).
    bf16 = resolve_precision(cfg.trainer.precision, "cpu").precision.startswith("bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        initial = evaluate_row(model, stream)
        rows = []
        start = time.perf_counter()
        for experience in bench.train_stream:
            strategy.train(experience, num_workers=0)
            rows.append(evaluate_row(model, stream))
    wall = time.perf_counter() - start
    return {
        "summary": summary_from_rows(rows, initial),
        "epoch_seconds": timer.seconds,
        "epoch_cpu_seconds": timer.cpu_seconds,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="split_mnist", choices=["split_mnist", "split_cifar10", "permuted_mnist"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--batch-order",
        choices=["ours", "avalanche"],
        default="ours",
        help="Avalanche's Naive/EWC/LwF train on our batches in our order, or shuffle their own",
    )
    parser.add_argument("--out", type=Path, default=RUNS / "avalanche_side_by_side")
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=["ours", "avalanche"],
        default=["ours", "avalanche"],
        help="run only one side (a study runs our side through train.py and Avalanche's here)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for both sides, e.g. data.epochs_per_task=2"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    extra = [f"cpu_threads={args.threads}", *args.overrides]
    for seed in args.seeds:
        path = args.out / f"{args.suite}_seed{seed}.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        for name in args.methods:
            base = experiment_of(name)[0]
            for side, runner, method, key in (
                ("ours", run_ours, name, f"{name}/ours"),
                ("avalanche", run_avalanche, base, f"{base}/avalanche"),
            ):
                if key in record or side not in args.sides:
                    continue
                result = (
                    runner(args.suite, method, seed, extra)
                    if side == "ours"
                    else runner(args.suite, method, seed, extra, args.batch_order)
                )
                record[key] = result
                write_json(path, record)
                s = result["summary"]
                figures = "  ".join(f"{sc} {s[sc]['acc']:6.2f} (forgetting {s[sc]['forgetting']:6.2f})" for sc in s)
                print(
                    f"[seed {seed}] {name:>8} {side:>9}: {figures}  epoch "
                    f"{statistics.mean(result['epoch_seconds']):7.2f}s",
                    flush=True,
                )
    if args.sides == ["ours", "avalanche"]:
        report(args.out, args.suite, args.seeds, args.methods)


def report(out: Path, suite: str, seeds: list[int], methods: list[str]) -> dict[str, Any]:
    """Print the table (mean +- std over seeds) and return its figures."""
    records = [json.loads((out / f"{suite}_seed{s}.json").read_text()) for s in seeds]
    scenarios = list(records[0][next(iter(records[0]))]["summary"])
    columns = [(sc, "acc") for sc in scenarios] + [(sc, "forgetting") for sc in scenarios]
    labels = {"class_il": "class-IL", "task_il": "task-IL", "domain_il": "domain-IL"}

    def stat(values: list[float]) -> tuple[float, float]:
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    print(f"\n{suite}, seeds {seeds} (mean +- std over seeds)")
    print(
        "| method | side | " + " | ".join(f"{labels[sc]} {k}" for sc, k in columns) + " | s / epoch | CPU s / epoch |"
    )
    print("|---|---|" + "---|" * len(columns) + "---|---|")
    table: dict[str, Any] = {}
    for name in methods:
        base = experiment_of(name)[0]
        shown_with_base = name != base and base in methods  # the shared Avalanche row is printed once
        for side in ("ours",) if shown_with_base else ("ours", "avalanche"):
            rs = [r[f"{name if side == 'ours' else base}/{side}"] for r in records]
            cells = {f"{sc}/{k}": stat([r["summary"][sc][k] for r in rs]) for sc, k in columns}
            cells["epoch_seconds"] = stat([statistics.mean(r["epoch_seconds"]) for r in rs])
            cells["epoch_cpu_seconds"] = stat(
                [statistics.mean(r.get("epoch_cpu_seconds") or [float("nan")]) for r in rs]
            )
            label = name if side == "ours" else PAIRS[base]
            table[f"{label}/{side}"] = cells
            print(f"| {label} | {side} | " + " | ".join(f"{m:6.2f} +- {s:5.2f}" for m, s in cells.values()) + " |")
    rows = [
        {
            "method": label.split("/")[0],
            "side": label.split("/")[1],
            "seeds": len(seeds),
            **{
                f"{k.replace('/', '_')}_{stat}": v[i]
                for k, v in cells.items()
                for i, stat in enumerate(("mean", "std"))
            },
        }
        for label, cells in table.items()
    ]
    append_record(
        f"benchmarks/continual/records/avalanche_side_by_side_{suite}.jsonl",
        rows,
        settings={"suite": suite, "seeds": seeds, "methods": methods},
    )
    return table


if __name__ == "__main__":
    main()
