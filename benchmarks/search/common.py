"""Shared by the search benchmarks: run an experiment's searcher on its problem until it is solved.

The searcher and the problem are built from the same experiment file ``train.py`` uses
(``conf/experiment/es/*.yaml``), so "our setting" is the config, not a copy of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir

from metalab.search.loop import run_generation

REPO = Path(__file__).resolve().parents[2]
CHECK_SEED, TEST_SEED = 10_000_000, 20_000_000


def build(experiment: str, seed: int):
    """``(problem, searcher)`` of ``+experiment=<experiment>`` with ``seed``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+experiment={experiment}", f"seed={seed}", "paths.output_dir=."])
    problem = hydra.utils.instantiate(cfg.problem)
    return problem, hydra.utils.instantiate(cfg.learner.searcher)(space=problem.space, seed=seed)


def solve(experiment: str, seed: int, max_generations: int, max_seconds: float, check_episodes: int = 100) -> dict:
    """Search until the searcher's centre averages ``problem.solved_at`` over ``check_episodes`` fresh
    episodes (checked after a generation whose best candidate reached it). Only the search is timed.
    A solved run's centre is then scored on another ``check_episodes`` fresh episodes (``test_return``)."""
    problem, searcher = build(experiment, seed)
    searching, evaluations = 0.0, 0
    for generation in range(max_generations):
        start = time.perf_counter()
        summary = run_generation(searcher, problem, seed, generation)
        searching += time.perf_counter() - start
        evaluations += int(summary["evaluations"])
        if summary["best_fitness"] >= problem.solved_at:
            returns = problem.evaluate_solution(searcher.best().genome, seed=CHECK_SEED + generation, episodes=check_episodes)
            if returns.mean() >= problem.solved_at:
                test = problem.evaluate_solution(searcher.best().genome, seed=TEST_SEED + seed, episodes=check_episodes)
                return {"solved": True, "seconds": searching, "generations": generation + 1, "evaluations": evaluations,
                        "check_return": float(returns.mean()), "test_return": float(test.mean())}
        if searching > max_seconds:
            break
    return {"solved": False, "seconds": searching, "generations": generation + 1, "evaluations": evaluations}
