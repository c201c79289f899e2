"""Pendulum-v1 with CMA-ES (``conf/experiment/es/pendulum_cmaes.yaml``): wall time until the searcher's mean
policy averages >= -200 over 100 fresh episodes, and its return on another 100 fresh episodes.

    taskset -c 1 python benchmarks/search/pendulum_cmaes.py --seeds 3
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from common import solve

from metalab.report.records import append_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-generations", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--notes", default="", help="what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    outcomes = []
    for seed in range(args.seeds):
        outcomes.append(solve("es/pendulum_cmaes", seed, args.max_generations, args.max_seconds))
        print(f"seed {seed}: {outcomes[-1]}", flush=True)
    solved = [o for o in outcomes if o["solved"]]
    times = [o["seconds"] if o["solved"] else math.inf for o in outcomes]
    row = {
        "method": "metalab_cmaes",
        "solved": f"{len(solved)}/{len(outcomes)}",
        "median_s_to_solve": statistics.median(times) if math.isfinite(statistics.median(times)) else None,
        "seconds_per_seed": [round(t, 1) if math.isfinite(t) else None for t in times],
        "generations_per_seed": [o["generations"] for o in outcomes],
        "test_return_per_seed": [round(o["test_return"], 1) if o["solved"] else None for o in outcomes],
        "min_test_return": min((o["test_return"] for o in solved), default=None),
    }
    print(row)
    append_record(
        "benchmarks/search/records/pendulum_cmaes.jsonl",
        row,
        settings={
            "seeds": args.seeds,
            "max_generations": args.max_generations,
            "max_seconds": args.max_seconds,
            "solved_at": -200.0,
            "episodes": 100,
        },
        notes=args.notes or None,
    )


if __name__ == "__main__":
    main()
