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
from metalab.search.solved import solve_check

REPO = Path(__file__).resolve().parents[2]
TEST_SEED = 20_000_000


def build(experiment: str, seed: int):
    """``(problem, searcher)`` of ``+experiment=<experiment>`` with ``seed``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"+experiment={experiment}", f"seed={seed}", "paths.output_dir=."]
        )
    problem = hydra.utils.instantiate(cfg.problem)
    return problem, hydra.utils.instantiate(cfg.learner.searcher)(space=problem.space, seed=seed)


def solve(experiment: str, seed: int, max_generations: int, max_seconds: float, check_episodes: int = 100) -> dict:
    """Search until the searcher's centre passes the solve check a run makes (``metalab.search.solved``:
    mean return >= ``problem.solved_at`` over ``check_episodes`` episodes, checked after a generation whose
    best candidate reached it). Only the search is timed. A solved run's centre is then scored on another
    ``check_episodes`` held-out episodes (``test_return``)."""
    problem, searcher = build(experiment, seed)
    problem.eval_episodes = check_episodes
    searching, evaluations = 0.0, 0
    for generation in range(max_generations):
        start = time.perf_counter()
        summary = run_generation(searcher, problem, seed, generation)
        searching += time.perf_counter() - start
        evaluations += int(summary["evaluations"])
        if summary["best_fitness"] >= problem.solved_at:
            check = solve_check(problem, searcher.best().genome, generation + 1)
            if check["solved"]:
                test = problem.evaluate_solution(searcher.best().genome, seed=TEST_SEED + seed, episodes=check_episodes)
                return {
                    "solved": True,
                    "seconds": searching,
                    "generations": generation + 1,
                    "evaluations": evaluations,
                    "check_return": check["solve_return"],
                    "test_return": float(test.mean()),
                }
        if searching > max_seconds:
            break
    return {"solved": False, "seconds": searching, "generations": generation + 1, "evaluations": evaluations}
