"""NSGA-II on ZDT1/2/3 side by side with pymoo's NSGA2: same population, same evaluations, same seeds.

Ours: :class:`metalab.search.GeneticAlgorithm` with the ``nsga2`` searcher config (survival fraction 1,
SBX eta 15 / p 0.9, polynomial mutation eta 20 at rate 1/30: pymoo's defaults). pymoo: ``NSGA2(pop_size=100)``
with its defaults, terminated at the same number of evaluations. The two alternate seed by seed in one
process, so load on the machine hits both alike. Hypervolume of each final non-dominated set at (1.1, 1.1)
by metalab's 2-D sweep and, as an independent check, by pymoo's ``HV`` indicator.

    taskset -c 1 python benchmarks/search/zdt_vs_pymoo.py --seeds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from metalab.report.records import append_record
from metalab.search import GeneticAlgorithm, stack
from metalab.search.pareto import hypervolume_2d
from metalab.search.problems import ZDT

REFERENCE = (1.1, 1.1)


def run_ours(variant: int, population: int, evaluations: int, seed: int) -> tuple[np.ndarray, float]:
    problem = ZDT(variant, n_variables=30)
    searcher = GeneticAlgorithm(
        problem.space, population_size=population, survival_fraction=1.0, objectives=2, seed=seed
    )
    start = time.perf_counter()
    for _ in range(evaluations // population):
        candidates = searcher.ask()
        searcher.tell(candidates, problem.evaluate(stack(candidates)))
    seconds = time.perf_counter() - start
    return -searcher.pareto_front()[1], seconds


def run_pymoo(variant: int, population: int, evaluations: int, seed: int) -> tuple[np.ndarray, float]:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.optimize import minimize
    from pymoo.problems import get_problem

    problem = get_problem(f"zdt{variant}", n_var=30)
    start = time.perf_counter()
    result = minimize(problem, NSGA2(pop_size=population), ("n_evals", evaluations), seed=seed, verbose=False)
    return result.F, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--evaluations", type=int, default=25_000)
    parser.add_argument("--problems", default="1,2,3")
    parser.add_argument("--notes", default="", help="what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from pymoo.indicators.hv import HV

    indicator = HV(ref_point=np.array(REFERENCE))
    rows = []
    for variant in (int(v) for v in args.problems.split(",")):
        figures: dict[str, list[float]] = {
            k: [] for k in ("ours_hv", "pymoo_hv", "ours_s", "pymoo_s", "ours_hv_pymoo_indicator")
        }
        for seed in range(args.seeds):
            front, seconds = run_ours(variant, args.population, args.evaluations, seed)
            figures["ours_hv"].append(hypervolume_2d(front, REFERENCE))
            figures["ours_hv_pymoo_indicator"].append(float(indicator(front)))
            figures["ours_s"].append(seconds)
            front, seconds = run_pymoo(variant, args.population, args.evaluations, seed)
            figures["pymoo_hv"].append(hypervolume_2d(front, REFERENCE))
            figures["pymoo_s"].append(seconds)
            print(
                f"ZDT{variant} seed {seed}: hv ours {figures['ours_hv'][-1]:.5f} pymoo {figures['pymoo_hv'][-1]:.5f}; "
                f"s ours {figures['ours_s'][-1]:.2f} pymoo {figures['pymoo_s'][-1]:.2f}",
                flush=True,
            )
        median = {k: statistics.median(v) for k, v in figures.items()}
        assert abs(median["ours_hv"] - median["ours_hv_pymoo_indicator"]) < 1e-9, "the two hypervolume codes disagree"
        rows.append(
            {
                "problem": f"ZDT{variant}",
                "seeds": args.seeds,
                "median_hv_ours": median["ours_hv"],
                "median_hv_pymoo": median["pymoo_hv"],
                "min_hv_ours": min(figures["ours_hv"]),
                "min_hv_pymoo": min(figures["pymoo_hv"]),
                "median_s_ours": median["ours_s"],
                "median_s_pymoo": median["pymoo_s"],
                "hv_ours_ge_pymoo": median["ours_hv"] >= median["pymoo_hv"],
                "time_ratio_ours_over_pymoo": median["ours_s"] / median["pymoo_s"],
            }
        )
        print(rows[-1], flush=True)
        # after every problem (the rows so far): a slow run still leaves the figures it has
        append_record(
            "benchmarks/search/records/zdt_vs_pymoo.jsonl",
            rows,
            settings={
                "population": args.population,
                "evaluations": args.evaluations,
                "n_variables": 30,
                "reference": list(REFERENCE),
                "seeds": args.seeds,
                "taskset": os.environ.get("TASKSET", ""),
            },
            notes=args.notes or None,
        )


if __name__ == "__main__":
    main()
