"""Collect one seed's metrics of a suite into one JSON record, or compare two records bit for bit.

The record shows that a refactor changed no behaviour: the same runs before and after must give the
same numbers exactly (every float compared by its exact value, not within a tolerance).

    python experiments/continual/record_metrics.py collect --root logs/continual --suite split_mnist --seed 0 \\
        --out experiments/continual/records/split_mnist_seed0_after.json
    python experiments/continual/record_metrics.py compare A.json B.json      # exit 1 if anything differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMINGS = ("wall_seconds", "per_s")  # how long a run took: machine load, not behaviour
METHODS = ["finetune", "joint", "ewc", "online_ewc", "er_200", "er_500", "derpp_500", "lwf", "progressive"]


def collect(root: Path, suite: str, seed: int) -> dict[str, Any]:
    """``{method: {"metrics": metrics.json's metrics and global_step, "continual": continual_metrics.json}}``."""
    record: dict[str, Any] = {}
    for method in METHODS:
        run = root / suite / method / f"seed{seed}"
        if not (run / "metrics.json").is_file():
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        values = {k: v for k, v in metrics["metrics"].items() if not k.endswith(TIMINGS)}
        record[method] = {
            "global_step": metrics.get("global_step"),
            "metrics": values,
            "continual": json.loads((run / "continual_metrics.json").read_text()),
        }
    return record


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Every leaf where ``a`` and ``b`` differ (floats by exact equality)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one record" for k in sorted(a.keys() ^ b.keys())]
        for k in sorted(a.keys() & b.keys()):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--root", type=Path, required=True, help="run_suite.py's --root")
    c.add_argument("--suite", default="split_mnist")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--note", default="", help="what produced the runs (command, commit, CPU)")
    c.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("compare")
    d.add_argument("records", type=Path, nargs=2)
    args = parser.parse_args()
    if args.command == "collect":
        record = {
            "suite": args.suite,
            "seed": args.seed,
            "note": args.note,
            "runs": collect(args.root, args.suite, args.seed),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"{len(record['runs'])} runs -> {args.out}")
        return
    a, b = (json.loads(p.read_text())["runs"] for p in args.records)
    methods = sorted(a.keys() & b.keys())
    diffs = differences({m: a[m] for m in methods}, {m: b[m] for m in methods})
    for line in diffs[:50]:
        print(line)
    print(
        f"{len(methods)} methods in both ({', '.join(methods)}); "
        f"{'bit-identical' if not diffs else f'{len(diffs)} differences'}"
    )
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
