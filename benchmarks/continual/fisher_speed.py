"""Exact diagonal Fisher vs the squared mini-batch mean gradient (Avalanche's EWC importance): time and error.

Reduced ResNet-18 (nf=20) on the first ``--images`` training images of Split CIFAR-10's first task, in
eval mode (as Avalanche computes its importances). Each timing is the minimum over ``--repeats``
interleaved repeats (the machine is shared):

- ``avalanche``: Avalanche 0.6.0's own ``EWCPlugin.compute_importances`` (batch ``--batch-size``);
- ``batch_mean``: our re-statement of the same formula (``fisher.squared_batch_mean_gradient``);
- ``exact``: ``fisher.diagonal_fisher``, per-sample squared gradients layer by layer (chunk ``--chunk``);
- ``per_sample_loop``: one backward per image (the exact reference), on ``--loop-images`` images and
  scaled to ``--images``.

Also reports the relative L2 distance of the batch-mean approximation from the exact Fisher.

    python benchmarks/continual/fisher_speed.py --images 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RUNS, write_json

from metalab.data.streams import SplitStreamDataModule
from metalab.learners.continual import fisher as fisher_module
from metalab.learners.continual.fisher import diagonal_fisher, fisher_by_sample_loop, squared_batch_mean_gradient
from metalab.models.resnet import ResNet18
from metalab.report.records import append_record


def relative_l2(approx: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> float:
    num = sum(float(((approx[n] - exact[n]) ** 2).sum()) for n in exact)
    den = sum(float((exact[n] ** 2).sum()) for n in exact)
    return (num / den) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch of the batch-mean approximation")
    parser.add_argument("--chunk", type=int, default=128, help="memory chunk of the exact Fisher")
    parser.add_argument("--loop-images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--train-epochs",
        type=int,
        default=3,
        help="SGD epochs on the images before measuring (a Fisher is taken after training a task)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="model and inputs channels-last (all methods)")
    parser.add_argument(
        "--block-elements",
        type=int,
        default=fisher_module.BLOCK_ELEMENTS,
        help="elements of one block of per-sample conv gradients (fisher.BLOCK_ELEMENTS)",
    )
    parser.add_argument(
        "--grouped-min-positions",
        type=int,
        default=fisher_module.GROUPED_MIN_POSITIONS,
        help="output positions from which a conv's per-sample gradients use the grouped backward",
    )
    parser.add_argument("--profile", action="store_true", help="also print where one exact Fisher spends its time")
    parser.add_argument("--out", type=Path, default=RUNS / "fisher_speed.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Tuning knobs of the exact Fisher, read by fisher.py at call time.
    fisher_module.BLOCK_ELEMENTS, fisher_module.GROUPED_MIN_POSITIONS = args.block_elements, args.grouped_min_positions

    stream = SplitStreamDataModule(dataset="cifar10", train_examples_per_task=args.images, test_examples_per_task=10)
    stream.setup("fit")
    x, y = stream.train_tasks[0].x, stream.train_tasks[0].y
    model = ResNet18(nf=20)
    # EWC takes the Fisher after training a task: train on the images first (batch 32, SGD lr 0.05).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(args.train_epochs):
        for i in range(0, len(y), 32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimizer.step()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.eval()

    def batches(size: int):
        return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]

    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.training.plugins import EWCPlugin

    av_data = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y)
    plugin = EWCPlugin(ewc_lambda=1.0)
    av_optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    timings: dict[str, list[float]] = {"avalanche": [], "batch_mean": [], "exact": []}
    results = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        importances = plugin.compute_importances(
            model, torch.nn.CrossEntropyLoss(), av_optimizer, av_data, "cpu", args.batch_size
        )
        timings["avalanche"].append(time.perf_counter() - start)
        start = time.perf_counter()
        results["batch_mean"] = squared_batch_mean_gradient(model, batches(args.batch_size), train_mode=False)
        timings["batch_mean"].append(time.perf_counter() - start)
        start = time.perf_counter()
        results["exact"] = diagonal_fisher(model, batches(args.chunk))
        timings["exact"].append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    if args.profile:
        with torch.profiler.profile() as prof:
            diagonal_fisher(model, batches(args.chunk))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    avalanche = {n: d.data for n, d in importances.items()}
    start = time.perf_counter()
    loop = fisher_by_sample_loop(model, x[: args.loop_images], y[: args.loop_images])
    loop_seconds = (time.perf_counter() - start) * len(y) / args.loop_images
    exact_subset = diagonal_fisher(model, [(x[: args.loop_images], y[: args.loop_images])])

    # The machine is shared: the minimum over interleaved repeats is the least-disturbed estimate.
    med = {k: min(v) for k, v in timings.items()}
    record = {
        "images": len(y),
        "train_epochs": args.train_epochs,
        "batch_size": args.batch_size,
        "chunk": args.chunk,
        "threads": args.threads,
        "block_elements": args.block_elements,
        "grouped_min_positions": args.grouped_min_positions,
        "channels_last": args.channels_last,
        "seconds": timings,
        "min_seconds": med,
        "per_sample_loop_seconds_scaled": loop_seconds,
        "exact_over_avalanche": med["exact"] / med["avalanche"],
        "exact_over_batch_mean": med["exact"] / med["batch_mean"],
        "loop_over_avalanche": loop_seconds / med["avalanche"],
        "relative_l2_batch_mean_vs_exact": relative_l2(results["batch_mean"], results["exact"]),
        "relative_l2_avalanche_vs_exact": relative_l2(avalanche, results["exact"]),
        "relative_l2_exact_vs_loop_fp32": relative_l2(exact_subset, loop),
    }
    write_json(args.out, record)
    append_record(
        "benchmarks/continual/records/fisher_speed.jsonl",
        {k: v for k, v in record.items() if k not in ("seconds", "min_seconds")}
        | {f"{k}_min_seconds": v for k, v in med.items()},
    )
    print(
        f"reduced ResNet-18 trained {args.train_epochs} epoch(s), {len(y)} CIFAR-10 images, {args.threads} thread(s), "
        f"{'channels-last' if args.channels_last else 'NCHW'}, min of {args.repeats} interleaved repeats, "
        f"block {args.block_elements} elements, grouped from {args.grouped_min_positions} positions"
    )
    print("| importance | seconds | x Avalanche |")
    print("|---|---|---|")
    for key, label in (
        ("avalanche", f"Avalanche EWCPlugin.compute_importances (batch {args.batch_size})"),
        ("batch_mean", f"our batch-mean restatement (batch {args.batch_size})"),
        ("exact", f"exact per-sample Fisher, layer-wise (chunk {args.chunk})"),
    ):
        print(f"| {label} | {med[key]:.2f} | {med[key] / med['avalanche']:.2f} |")
    print(
        f"| per-sample backward loop (scaled from {args.loop_images}) | {loop_seconds:.2f} | "
        f"{loop_seconds / med['avalanche']:.2f} |"
    )
    print(
        f"relative L2 distance from the exact Fisher: Avalanche {record['relative_l2_avalanche_vs_exact']:.3f}, "
        f"batch-mean restatement {record['relative_l2_batch_mean_vs_exact']:.3f}; "
        f"exact vs per-sample loop (fp32) {record['relative_l2_exact_vs_loop_fp32']:.2e}"
    )


if __name__ == "__main__":
    main()
