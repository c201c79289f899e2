"""Collect the runs of ``run_suite.py`` into a Markdown report: mean +- std over seeds, paper targets, checks.

    python experiments/continual/report.py --suite split_cifar10 --out experiments/continual/split_cifar10.md

Reads ``<root>/<suite>/<method>/seed*/metrics.json`` (what ``train.py`` wrote) and the targets recorded in
each run. The expected orderings of issue 4 are checked on the means and printed as verified / not.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METHODS = ["finetune", "joint", "ewc", "online_ewc", "er_200", "er_500", "derpp_500", "lwf", "progressive"]
COLUMNS = [("class_il", "acc"), ("task_il", "acc"), ("class_il", "forgetting"), ("task_il", "forgetting"),
           ("class_il", "bwt"), ("task_il", "fwt")]


def load(root: Path, suite: str) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for method in METHODS:
        for path in sorted((root / suite / method).glob("seed*/metrics.json")):
            runs.setdefault(method, []).append(json.loads(path.read_text()))
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, choices=["split_mnist", "split_cifar10"])
    parser.add_argument("--root", type=Path, default=Path("/work/runs/continual"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = load(args.root, args.suite)
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    lines = [f"## {args.suite}: mean +- std over seeds (accuracy and forgetting in %)", "",
             "| method | seeds | class-IL acc | task-IL acc | class-IL forgetting | task-IL forgetting | class-IL BWT "
             "| task-IL FWT | paper class-IL / task-IL | s / run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, records in runs.items():
        cells = []
        stats[method] = {}
        for scenario, key in COLUMNS:
            values = [r["metrics"][f"test/{scenario}/{key}"] for r in records]
            m, s = mean_std(values)
            stats[method][f"{scenario}/{key}"] = (m, s)
            cells.append(f"{m:.2f} +- {s:.2f}")
        targets = records[0].get("targets", {})
        paper = f"{targets.get('class_il', {}).get('paper', '?')} / {targets.get('task_il', {}).get('paper', '?')}"
        wall = statistics.mean(r["metrics"].get("train/wall_seconds", float("nan")) for r in records)
        seeds = ",".join(str(r["seed"]) for r in records)
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + f" | {paper} | {wall:.0f} |")

    def get(method: str, key: str) -> float | None:
        return stats.get(method, {}).get(key, (None,))[0]

    checks = []
    chain = [get(m, "class_il/acc") for m in ("joint", "derpp_500", "er_500", "finetune")]
    if None not in chain:
        ok = chain[0] > chain[1] > chain[2] > chain[3]
        checks.append(("class-IL: joint > DER++ (500) > ER (500) > fine-tune",
                       " > ".join(f"{v:.2f}" for v in chain), ok))
    pnn = [r["metrics"]["test/task_il/forgetting"] for r in runs.get("progressive", [])]
    if pnn:
        checks.append(("task-IL: progressive networks forget nothing (every seed)",
                       ", ".join(f"{v:.2f}" for v in pnn), all(v == 0.0 for v in pnn)))
    for ewc in ("ewc", "online_ewc"):
        pair = [get(ewc, "task_il/acc"), get("finetune", "task_il/acc")]
        if None not in pair:
            checks.append((f"task-IL: {ewc} > fine-tune", f"{pair[0]:.2f} vs {pair[1]:.2f}", pair[0] > pair[1]))
    lines += ["", "Expected orderings (issue 4), checked on the means:", ""]
    lines += [f"- {'verified' if ok else 'NOT verified'}: {name} ({detail})" for name, detail, ok in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
