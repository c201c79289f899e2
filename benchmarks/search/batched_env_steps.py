"""Environment steps per second for a population of 256 policies: batched against one policy at a time.

Batched: :meth:`metalab.search.policy.PolicySearch.returns`, every policy's episode stepped together
(gymnasium's vectorised CartPole; metalab's batched Pendulum) with one stacked forward per time step.
Loop: :func:`metalab.search.policy.rollout_one_by_one`, one ``gymnasium.make`` env and one forward per
policy and step, the same MLP code. Both in this process, alternating, on the same 256 policies; a step
is one policy's env step that counts towards its return (the batched side also pays for the envs whose
episodes already ended). The policies are a population as an ES sees it, one centre plus noise
N(0, 0.1^2): for CartPole a centre that balances (its first hidden unit reads 10 angle + 2 angular
speed, the two logits are -/+ that unit), so episodes run long as they do near the end of a search;
for Pendulum random weights (episodes always last 200 steps). Environments are built before timing.

    taskset -c 1 python benchmarks/search/batched_env_steps.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from metalab.report.records import append_record
from metalab.search.envs import BatchedPendulum, GymnasiumVectorEnv
from metalab.search.policy import PolicySearch, rollout_one_by_one

SETUPS = {
    "CartPole-v1": lambda: PolicySearch(partial(GymnasiumVectorEnv, "CartPole-v1"), hidden=(16,), common_starts=False),
    "Pendulum-v1": lambda: PolicySearch(BatchedPendulum, hidden=(16,), common_starts=False),
}


def population(problem: PolicySearch, env_id: str, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if env_id != "CartPole-v1":
        return rng.normal(scale=0.5, size=(size, len(problem.space)))
    centre = np.zeros(len(problem.space))
    hidden = problem.policy.shapes[0][1]
    first = np.zeros((4, hidden))
    first[2, 0], first[3, 0] = 10.0, 2.0  # unit 0: 10 angle + 2 angular speed
    second = np.zeros((hidden, 2))
    second[0] = [-1.0, 1.0]  # push right when the pole leans right
    centre[: 4 * hidden] = first.ravel()
    offset = 4 * hidden + hidden
    centre[offset : offset + 2 * hidden] = second.ravel()
    return centre + rng.normal(scale=0.1, size=(size, len(centre)))


def episode_steps(env_id: str, returns: np.ndarray, problem: PolicySearch) -> int:
    """CartPole pays 1 per step, so a return is a step count; Pendulum episodes always run to the limit."""
    return int(returns.sum()) if env_id == "CartPole-v1" else len(returns) * problem.max_episode_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notes", default="", help="what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for env_id, make in SETUPS.items():
        problem = make()
        genomes = population(problem, env_id, args.population)
        problem.returns(genomes[:2], episodes=1, seed=0)  # build the envs outside the clock
        problem.env(args.population)
        batched_rates, loop_rates = [], []
        for round_ in range(args.rounds):
            start = time.perf_counter()
            returns = problem.returns(genomes, episodes=1, seed=round_)[:, 0]
            batched_rates.append(episode_steps(env_id, returns, problem) / (time.perf_counter() - start))
            start = time.perf_counter()
            returns = rollout_one_by_one(problem, genomes, env_id, seed=round_)
            loop_rates.append(episode_steps(env_id, returns, problem) / (time.perf_counter() - start))
            print(
                f"{env_id} round {round_}: batched {batched_rates[-1]:.0f} steps/s, loop {loop_rates[-1]:.0f} steps/s",
                flush=True,
            )
        batched, loop = statistics.median(batched_rates), statistics.median(loop_rates)
        rows.append(
            {
                "env": env_id,
                "policies": args.population,
                "batched_steps_per_s": batched,
                "loop_steps_per_s": loop,
                "speedup": batched / loop,
            }
        )
        print(rows[-1], flush=True)
    append_record(
        "benchmarks/search/records/batched_env_steps.jsonl",
        rows,
        settings={"population": args.population, "rounds": args.rounds, "hidden": [16]},
        notes=args.notes or None,
    )


if __name__ == "__main__":
    main()
