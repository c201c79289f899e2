"""Search cost on this machine: a DARTS supernet step and a discrete cell's training step, against the
number of cells stacked per stage (N), in one process, one thread, alternating rounds.

    python benchmarks/nas/search_cost.py --cells 1 2 3 --rounds 3 --steps 3

A supernet step is one first-order DARTS step (architecture step on a validation batch, then weight step
on a train batch, batch 64, 16x16 CIFAR-10-sized inputs, C=16). A cell step is one SGD step of the
hand-designed ResNet cell's network and of the all-3x3-conv cell's (the most expensive of the space).
Per-epoch figures multiply by the steps of one nas/darts epoch (15); per-architecture figures by the
short-training fitness's 40 steps plus its 1,000-image validation pass (measured). The figures are
medians over rounds; a record goes to benchmarks/nas/records/search_cost.jsonl.

Clock: the process's CPU time (``time.process_time``), not wall time: on this shared 2-core machine other
sessions' runs take most of each core, and a single-threaded process's CPU time is the compute it needed
(wall time was 3-10x longer under the load we ran at). Cache and memory-bandwidth contention still
show in CPU time, so figures taken at different load averages differ by more than their rounds do.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from metalab.nas.darts import classification_loss
from metalab.nas.fitness import accuracy
from metalab.nas.network import CellNetwork, SuperNetwork, count_parameters
from metalab.nas.space import RESNET_CELL, Genotype
from metalab.report.records import append_record

ALL_CONV = Genotype(("nor_conv_3x3",) * 6)
DARTS_STEPS_PER_EPOCH, FITNESS_STEPS, VALIDATION_IMAGES = 15, 40, 1000


def darts_step_seconds(supernet: SuperNetwork, batch: tuple[torch.Tensor, ...], steps: int) -> float:
    weights = torch.optim.SGD(supernet.weight_parameters(), lr=0.025, momentum=0.9)
    arch = torch.optim.Adam([supernet.arch_logits], lr=3e-3, betas=(0.5, 0.999))
    x, y, x_val, y_val = batch
    start = time.process_time()
    for _ in range(steps):
        arch.zero_grad()
        classification_loss(supernet, x_val, y_val, 0.5)[0].backward(inputs=[supernet.arch_logits])
        arch.step()
        weights.zero_grad()
        classification_loss(supernet, x, y, 0.5)[0].backward(inputs=supernet.weight_parameters())
        weights.step()
    return (time.process_time() - start) / steps


def cell_step_seconds(network: CellNetwork, batch: tuple[torch.Tensor, ...], steps: int) -> float:
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    x, y = batch[:2]
    network.train()
    start = time.process_time()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(network(x), y).backward()
        optimizer.step()
    return (time.process_time() - start) / steps


def validation_seconds(network: CellNetwork, images: torch.Tensor, labels: torch.Tensor) -> float:
    start = time.process_time()
    accuracy(network, (images, labels))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = (
        torch.randn(64, 3, 16, 16),
        torch.randint(0, 10, (64,)),
        torch.randn(64, 3, 16, 16),
        torch.randint(0, 10, (64,)),
    )
    val_images, val_labels = torch.randn(VALIDATION_IMAGES, 3, 16, 16), torch.randint(0, 10, (VALIDATION_IMAGES,))
    nets = {n: (SuperNetwork(16, n), CellNetwork(RESNET_CELL, 16, n), CellNetwork(ALL_CONV, 16, n)) for n in args.cells}
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.rounds):  # alternate settings within each round: load drift hits all of them alike
        for n, (supernet, resnet, all_conv) in nets.items():
            times.setdefault((n, "supernet"), []).append(darts_step_seconds(supernet, batch, args.steps))
            times.setdefault((n, "resnet"), []).append(cell_step_seconds(resnet, batch, args.steps))
            times.setdefault((n, "all_conv"), []).append(cell_step_seconds(all_conv, batch, args.steps))
            times.setdefault((n, "validation"), []).append(validation_seconds(resnet, val_images, val_labels))
    rows = []
    for n, (supernet, resnet, _) in nets.items():
        median = {
            kind: statistics.median(times[(n, kind)]) for kind in ("supernet", "resnet", "all_conv", "validation")
        }
        rows.append(
            {
                "cells_per_stage": n,
                "supernet_step_s": round(median["supernet"], 3),
                "supernet_epoch_s": round(median["supernet"] * DARTS_STEPS_PER_EPOCH, 1),
                "resnet_cell_step_s": round(median["resnet"], 3),
                "all_conv_cell_step_s": round(median["all_conv"], 3),
                "resnet_architecture_s": round(median["resnet"] * FITNESS_STEPS + median["validation"], 1),
                "all_conv_architecture_s": round(median["all_conv"] * FITNESS_STEPS + median["validation"], 1),
                "supernet_parameters": count_parameters(supernet),
                "resnet_parameters": count_parameters(resnet),
            }
        )
        print(rows[-1])
    append_record(
        "benchmarks/nas/records/search_cost.jsonl",
        rows,
        benchmark="nas_search_cost",
        settings={
            "rounds": args.rounds,
            "steps": args.steps,
            "threads": args.threads,
            "batch": 64,
            "resolution": 16,
            "channels": 16,
        },
        notes="median over rounds; one process, settings alternated within each round",
    )


if __name__ == "__main__":
    main()
