"""Wall time to solve CartPole-v1 (mean return >= 475 over 100 fresh episodes): ours against EvoTorch.

Ours: the searcher and problem of ``conf/experiment/es/cartpole_openai_es.yaml`` and ``es/cartpole_cmaes.yaml``
(built from the same config files ``train.py`` uses; the whole population stepped together). EvoTorch
0.6.1: its ``GymNE`` problem on CartPole-v1 with the policy of its CartPole example
(``Linear(obs_length, 16) >> Tanh() >> Linear(16, act_length)``, observation normalisation on), in the
main process (``num_actors=None``: one core for both sides), searched by its CMA-ES (the ``cma`` package;
same population and initial step size as our CMA-ES run) and its PGPE with ClipUp.

The same stopping rule for everyone: after a generation whose best candidate scored >= 475, the
searcher's centre is evaluated on 100 fresh episodes; it stops when their mean is >= 475. The clock runs
only during the search (ask, evaluate, tell), not during these checks, so neither side pays for how it
evaluates its centre. A run not solved within ``--max-generations`` or ``--max-seconds`` of search counts as unsolved
(its time then bounds the time to solve from below).

    taskset -c 1 python benchmarks/search/cartpole_time_to_solve.py --seeds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from common import solve

from metalab.report.records import append_record

SOLVED, CHECK_EPISODES = 475.0, 100


def evotorch_run(algorithm: str, seed: int, max_generations: int, max_seconds: float) -> dict:
    from evotorch.algorithms import CMAES, PGPE
    from evotorch.neuroevolution import GymNE

    torch.manual_seed(seed)
    np.random.seed(seed)
    problem = GymNE(
        "CartPole-v1",
        "Linear(obs_length, 16) >> Tanh() >> Linear(16, act_length)",
        observation_normalization=True,
        num_actors=None,
    )
    if algorithm == "cmaes":
        searcher = CMAES(problem, stdev_init=0.5, popsize=32)
    else:
        searcher = PGPE(
            problem,
            popsize=64,
            center_learning_rate=0.075,
            stdev_learning_rate=0.1,
            radius_init=0.27,
            optimizer="clipup",
            optimizer_config={"max_speed": 0.15},
        )
    searching, evaluations = 0.0, 0
    for generation in range(max_generations):
        start = time.perf_counter()
        searcher.step()
        searching += time.perf_counter() - start
        evaluations += len(searcher.population)
        if float(searcher.population.evals.max()) >= SOLVED:
            returns = batched_check(problem.to_policy(searcher.status["center"]), seed=10_000_000 + generation)
            if float(returns) >= SOLVED:
                return {
                    "solved": True,
                    "seconds": searching,
                    "generations": generation + 1,
                    "evaluations": evaluations,
                    "check_return": float(returns),
                }
        if searching > max_seconds:
            return {"solved": False, "seconds": searching, "generations": generation + 1, "evaluations": evaluations}
    return {"solved": False, "seconds": searching, "generations": max_generations, "evaluations": evaluations}


@torch.no_grad()
def batched_check(policy: torch.nn.Module, seed: int) -> float:
    """Mean return of an EvoTorch policy (its module includes its observation normaliser) over
    ``CHECK_EPISODES`` episodes stepped together, as our side checks its centre: the check costs both
    sides alike (and is not timed anyway)."""
    from metalab.search.envs import GymnasiumVectorEnv

    env = GymnasiumVectorEnv("CartPole-v1", CHECK_EPISODES)
    observations = env.reset(seed=seed)
    total, running = np.zeros(CHECK_EPISODES), np.ones(CHECK_EPISODES, dtype=bool)
    for _ in range(env.max_episode_steps):
        actions = policy(torch.as_tensor(observations, dtype=torch.float32)).argmax(-1).numpy()
        observations, rewards, done = env.step(actions)
        total += np.where(running, rewards, 0.0)
        running &= ~done
        if not running.any():
            break
    return float(total.mean())


METHODS = {
    "metalab_openai_es": lambda seed, *cap: solve("es/cartpole_openai_es", seed, *cap, check_episodes=CHECK_EPISODES),
    "metalab_cmaes": lambda seed, *cap: solve("es/cartpole_cmaes", seed, *cap, check_episodes=CHECK_EPISODES),
    "evotorch_cmaes": lambda seed, *cap: evotorch_run("cmaes", seed, *cap),
    "evotorch_pgpe": lambda seed, *cap: evotorch_run("pgpe", seed, *cap),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-generations", type=int, default=200)
    parser.add_argument(
        "--max-seconds", type=float, default=180.0, help="search time after which a run counts as unsolved"
    )
    parser.add_argument("--notes", default="", help="what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = args.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in range(args.seeds):  # methods alternate within a seed, so machine load hits all alike
        for method in methods:
            outcome = METHODS[method](seed, args.max_generations, args.max_seconds)
            results[method].append(outcome)
            print(f"{method} seed {seed}: {outcome}", flush=True)
        record(results, args, seeds_done=seed + 1)  # after every seed: a slow run still leaves its figures


def record(results: dict[str, list[dict]], args: argparse.Namespace, seeds_done: int) -> None:
    rows = []
    for method, outcomes in results.items():
        times = [o["seconds"] if o["solved"] else math.inf for o in outcomes]
        unsolved = [o["seconds"] for o in outcomes if not o["solved"]]
        median = statistics.median(times)
        rows.append(
            {
                "method": method,
                "solved": f"{sum(o['solved'] for o in outcomes)}/{len(outcomes)}",
                "median_s_to_solve": median if math.isfinite(median) else None,
                "median_generations": statistics.median(o["generations"] for o in outcomes),
                "median_evaluations": statistics.median(o["evaluations"] for o in outcomes),
                "seconds_per_seed": [round(t, 2) if math.isfinite(t) else None for t in times],
                "unsolved_after_s": [round(t, 1) for t in unsolved],
            }
        )
    for row in rows:
        print(row)
    append_record(
        "benchmarks/search/records/cartpole_time_to_solve.jsonl",
        rows,
        settings={
            "seeds": args.seeds,
            "seeds_done": seeds_done,
            "max_generations": args.max_generations,
            "max_seconds": args.max_seconds,
            "solved_at": SOLVED,
            "check_episodes": CHECK_EPISODES,
        },
        notes=args.notes or None,
    )


if __name__ == "__main__":
    main()
