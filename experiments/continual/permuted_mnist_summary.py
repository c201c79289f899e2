"""Permuted MNIST (issue 24): mean +- std over seeds from the study's committed run records, and the checks.

The study ``experiments/permuted_mnist.yaml`` makes the runs (``metalab report experiments/permuted_mnist.yaml``)
and commits each run's ``metrics.json`` under ``experiments/permuted_mnist/runs/<budget>/<label>/seed<k>/``.
The study report gives means with 95% intervals; the issue asks for mean +- std, orderings, the
distance to Avalanche and the replay-buffer question, which this script reads from the same records:

    python experiments/continual/permuted_mnist_summary.py            # prints, and appends the record
    python experiments/continual/permuted_mnist_summary.py --no-record

Appends to ``benchmarks/continual/records/permuted_mnist.jsonl`` (with the command, commit, date and CPU,
:func:`metalab.report.records.append_record`): ``permuted_mnist_methods`` (one row per run label),
``permuted_mnist_checks`` (each check with its figures and verdict) and ``permuted_mnist_runs`` (per seed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from metalab.report.records import append_record, repo_root

RECORD = "benchmarks/continual/records/permuted_mnist.jsonl"
KEYS = ("acc", "forgetting", "bwt", "fwt")
WELL_ABOVE_POINTS = 3.0  # "well above": more than this many points and more than the two stds added together
AVALANCHE_TOLERANCE = 1.5  # the side-by-side criterion, in points of average accuracy
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78}  # two-sided 5% critical values of Student's t
PAIRS = [
    ("finetune", "Naive (Avalanche)"),
    ("ewc", "EWC (Avalanche)"),
    ("er_500", "Replay (Avalanche)"),
    ("er_500_task_end", "Replay (Avalanche)"),
]


def load_runs(folder: Path) -> dict[str, dict[int, dict[str, float]]]:
    """``{label: {seed: {acc, forgetting, bwt, fwt, seconds_per_epoch?}}}`` from every run record."""
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for path in sorted(folder.glob("*/seed*/metrics.json")):
        record = json.loads(path.read_text())
        metrics = record["metrics"]
        label = json.loads((path.parent / "run.json").read_text())["label"]
        figures = {key: float(metrics[f"test/domain_il/{key}"]) for key in KEYS}
        if "train/seconds_per_epoch" in metrics:
            figures["seconds_per_epoch"] = float(metrics["train/seconds_per_epoch"])
        runs.setdefault(label, {})[int(record["seed"])] = figures
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_t(runs: dict[str, dict[int, dict[str, float]]], a: str, b: str) -> tuple[float, int]:
    """Paired t statistic of a - b over the seeds both have, and its degrees of freedom. Paired because a
    seed fixes the permutations and the batch order, which move both runs together."""
    seeds = sorted(runs[a].keys() & runs[b].keys())
    diffs = [runs[a][k]["acc"] - runs[b][k]["acc"] for k in seeds]
    if len(diffs) < 2:
        return float("nan"), 0
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return (statistics.mean(diffs) / se if se > 0 else float("inf")), len(diffs) - 1


def paired(runs: dict[str, dict[int, dict[str, float]]], a: str, b: str) -> str:
    """Per-seed differences of average accuracy, a - b, on the seeds both have (the same permutations)."""
    seeds = sorted(runs[a].keys() & runs[b].keys())
    return "per seed " + ", ".join(f"{runs[a][k]['acc'] - runs[b][k]['acc']:+.2f}" for k in seeds)


def checks(runs: dict[str, dict[int, dict[str, float]]]) -> list[dict[str, Any]]:
    acc = {label: [r["acc"] for r in seeds.values()] for label, seeds in runs.items()}
    out: list[dict[str, Any]] = []
    ours = [label for label in acc if "Avalanche" not in label]
    if "joint" in acc:
        others = {label: statistics.mean(acc[label]) for label in ours if label != "joint"}
        best = max(others, key=others.get)
        out.append(
            {
                "check": "joint above every method of ours",
                "detail": f"joint {statistics.mean(acc['joint']):.2f} vs best other {best} {others[best]:.2f}",
                "verified": all(statistics.mean(acc["joint"]) > v for v in others.values()),
            }
        )
    if "finetune" in acc:
        ft_mean, ft_std = mean_std(acc["finetune"])
        for label in ("ewc", "online_ewc", "er_500", "derpp_500"):
            if label in acc:
                mean, std = mean_std(acc[label])
                gap = mean - ft_mean
                out.append(
                    {
                        "check": f"{label} well above fine-tune (> {WELL_ABOVE_POINTS:g} points and > the two "
                        "stds added)",
                        "detail": f"{mean:.2f} vs {ft_mean:.2f}: {gap:+.2f}, stds {std:.2f} + {ft_std:.2f}; "
                        + paired(runs, label, "finetune"),
                        "verified": gap > WELL_ABOVE_POINTS and gap > std + ft_std,
                    }
                )
    for label, theirs in PAIRS:
        if label in acc and theirs in acc:
            gap = statistics.mean(acc[label]) - statistics.mean(acc[theirs])
            out.append(
                {
                    "check": f"{label} within {AVALANCHE_TOLERANCE:g} points of {theirs} (or better)",
                    "detail": f"{statistics.mean(acc[label]):.2f} vs {statistics.mean(acc[theirs]):.2f}: "
                    f"{gap:+.2f}; " + paired(runs, label, theirs),
                    "verified": gap >= -AVALANCHE_TOLERANCE,
                }
            )
    if "er_500" in acc and "er_500_task_end" in acc:
        t, dof = paired_t(runs, "er_500_task_end", "er_500")
        gap = statistics.mean(acc["er_500_task_end"]) - statistics.mean(acc["er_500"])
        out.append(
            {
                "check": "replay buffer: task-balanced (task_end) differs from reservoir beyond noise (paired t "
                f"over seeds, |t| > {T975[dof] if dof in T975 else float('nan'):.2f}: p < 0.05 two-sided)",
                "detail": f"task_end - reservoir {gap:+.2f} points, paired t {t:.2f} ({dof} df); "
                + paired(runs, "er_500_task_end", "er_500"),
                "verified": dof in T975 and abs(t) > T975[dof],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="gem")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    folder = repo_root() / "experiments" / "permuted_mnist" / "runs" / args.budget
    runs = load_runs(folder)
    if not runs:
        raise SystemExit(f"error: no run records under experiments/permuted_mnist/runs/{args.budget}")
    rows = []
    print("| run | seeds | acc | forgetting | BWT | FWT |\n|---|---|---|---|---|---|")
    for label, seeds in runs.items():
        row: dict[str, Any] = {"run": label, "seeds": ",".join(map(str, sorted(seeds)))}
        for key in KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = (round(v, 2) for v in mean_std([r[key] for r in seeds.values()]))
        rows.append(row)
        print(
            f"| {label} | {row['seeds']} | "
            + " | ".join(f"{row[f'{k}_mean']:.2f} +- {row[f'{k}_std']:.2f}" for k in KEYS)
            + " |"
        )
    verdicts = checks(runs)
    for check in verdicts:
        print(f"- {'verified' if check['verified'] else 'NOT verified'}: {check['check']} ({check['detail']})")
    if args.no_record:
        return
    settings = {"study": "experiments/permuted_mnist.yaml", "budget": args.budget, "scenario": "domain_il"}
    append_record(RECORD, rows, benchmark="permuted_mnist_methods", settings=settings)
    append_record(RECORD, verdicts, benchmark="permuted_mnist_checks", settings=settings)
    append_record(
        RECORD,
        [
            {"run": label, "seed": seed, **{k: round(v, 2) for k, v in figures.items()}}
            for label, seeds in runs.items()
            for seed, figures in sorted(seeds.items())
        ],
        benchmark="permuted_mnist_runs",
        settings=settings,
    )


if __name__ == "__main__":
    main()
