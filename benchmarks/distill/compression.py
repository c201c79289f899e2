"""Compression table of the distillation study (issue 34): what a smaller student costs and keeps.

For the teacher and every student of ``experiments/distill_cifar10.yaml`` (with and without the teacher):
parameters, size on disk (bytes of the saved ``state_dict``), CPU latency per image with one thread at batch
1 and 64 (wall and process CPU time, median over rounds; all models timed round-robin in this one process so
they share the machine's load), test accuracy with its 95% CI over seeds and the training CPU time, all read
from the study's committed run records; and, per student size, the paired gap with the teacher minus without
(same seed: same initial weights and batch order) with its 95% CI.

    python benchmarks/distill/compression.py                 # appends to benchmarks/distill/records/compression.jsonl
    python benchmarks/distill/compression.py --no-record     # prints only

The architectures are rebuilt from each run's ``config_resolved.yaml`` (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
import yaml
from torch import nn

from metalab.report.collect import t975
from metalab.report.records import append_record, repo_root
from metalab.report.study import load_study

RECORD = "benchmarks/distill/records/compression.jsonl"
METRIC = "test/cifar10/acc"


def study_runs(study_file: Path, budget: str | None) -> dict[str, list[Path]]:
    """``{label: [run record folders in seed order]}`` of the study's finished runs."""
    study = load_study(study_file, budget)
    found: dict[str, list[Path]] = {}
    for run in study.runs:
        folder = study.records_dir(run)
        if (folder / "metrics.json").is_file():
            found.setdefault(run.label, []).append(folder)
    return found


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None for one value)."""
    if len(values) < 2:
        return values[0], None
    return statistics.mean(values), t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def build_model(folder: Path) -> tuple[nn.Module, bool]:
    """The run's network (fresh weights) and whether it ran channels-last."""
    config = yaml.safe_load((folder / "config_resolved.yaml").read_text())
    model = hydra.utils.instantiate(config["model"]).eval()
    channels_last = bool(config["learner"].get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def disk_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def time_per_image(model: nn.Module, channels_last: bool, batch: int, calls: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per image over ``calls`` forward passes of one ``batch``."""
    x = torch.randn(batch, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model(x)  # warm-up: first-call allocations and kernel choice
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        model(x)
    return (
        1000 * (time.perf_counter() - wall) / (calls * batch),
        1000 * (time.process_time() - cpu) / (calls * batch),
    )


def latencies(models: dict[str, tuple[nn.Module, bool]], rounds: int) -> dict[str, dict[str, float]]:
    """Median per-image wall and CPU ms at batch 1 and 64, the models interleaved in every round."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    for _ in range(rounds):
        for name, (model, channels_last) in models.items():
            for batch, calls in ((1, 50), (64, 3)):
                wall, cpu = time_per_image(model, channels_last, batch, calls)
                samples[name].setdefault(f"ms_b{batch}", []).append(wall)
                samples[name].setdefault(f"cpu_ms_b{batch}", []).append(cpu)
    return {name: {k: statistics.median(v) for k, v in kinds.items()} for name, kinds in samples.items()}


def accuracy_by_seed(folders: list[Path]) -> dict[int, dict[str, float]]:
    out = {}
    for folder in folders:
        record = json.loads((folder / "metrics.json").read_text())
        out[int(record["seed"])] = {
            "acc": float(record["metrics"][METRIC]),
            "cpu_s": float(record.get("train_cpu_seconds", math.nan)),
        }
    return out


def gap_rows(by_label: dict[str, dict[int, dict[str, float]]]) -> list[dict[str, Any]]:
    """Per student size, with-teacher minus without, paired by seed, with its 95% CI."""
    rows = []
    for label in sorted(by_label):
        partner = f"{label}_kd"
        if not label.startswith("student") or label.endswith("_kd") or partner not in by_label:
            continue
        seeds = sorted(set(by_label[label]) & set(by_label[partner]))
        if not seeds:
            continue
        gaps = [by_label[partner][s]["acc"] - by_label[label][s]["acc"] for s in seeds]
        mean, half = mean_ci(gaps)
        rows.append(
            {
                "student": label.removeprefix("student_"),
                "seeds": len(seeds),
                "with_teacher": statistics.mean(by_label[partner][s]["acc"] for s in seeds),
                "without": statistics.mean(by_label[label][s]["acc"] for s in seeds),
                "gap": mean,
                "gap_ci95": half,
                "ci_excludes_0": None if half is None else (mean - half > 0 or mean + half < 0),
                "gaps_by_seed": " ".join(f"{g:+.2f}" for g in gaps),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=Path("experiments/distill_cifar10.yaml"))
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median reported)")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = repo_root()
    runs = study_runs(root / args.study if not args.study.is_absolute() else args.study, args.budget)
    if "teacher" not in runs:
        raise SystemExit(
            "error: no teacher run recorded yet; run the study first (see experiments/distill_cifar10.yaml)"
        )
    models = {label: build_model(folders[0]) for label, folders in runs.items()}
    load_before = [round(x, 2) for x in os.getloadavg()]
    timed = latencies(models, args.rounds)
    load_after = [round(x, 2) for x in os.getloadavg()]
    teacher_parameters = sum(p.numel() for p in models["teacher"][0].parameters())
    by_label = {label: accuracy_by_seed(folders) for label, folders in runs.items()}
    rows = []
    for label, (model, _) in models.items():
        accs = [v["acc"] for v in by_label[label].values()]
        mean, half = mean_ci(accs)
        parameters = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                "model": label,
                "parameters": parameters,
                "of_teacher": parameters / teacher_parameters,
                "size_kb": disk_bytes(model) / 1024,
                **timed[label],
                "accuracy": mean,
                "ci95": half,
                "seeds": len(accs),
                "train_cpu_min": statistics.mean(v["cpu_s"] for v in by_label[label].values()) / 60,
            }
        )
    gaps = gap_rows(by_label)
    for row in rows + gaps:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"load average before/after timing: {load_before} / {load_after}")
    if not args.no_record:
        settings = {"study": str(args.study), "budget": args.budget, "rounds": args.rounds, "input": "3x32x32"}
        notes = f"load average before/after the timing: {load_before} / {load_after}"
        append_record(RECORD, rows, benchmark="distill_compression", settings=settings, notes=notes)
        append_record(RECORD, gaps, benchmark="distill_gap", settings=settings)
        print(f"appended to {RECORD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
