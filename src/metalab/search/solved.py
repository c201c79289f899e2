"""When a search has solved its task: one evaluation decides it, and every report of it quotes that one.

A problem with a ``solved_at`` return (gymnasium's threshold, e.g. 475 for CartPole-v1, the mean over 100
episodes) is solved by a solution whose mean return over ``eval_episodes`` fresh episodes reaches it.
Those episodes are drawn from :func:`solve_seed` of the generation the solution comes from, so the check
of a given solution always plays the same episodes: the check made during training to stop the run, the
console line that announces it and the run's ``test/solved`` are the same numbers, not three draws.

The run's held-out figure (``test/mean_return``, another ``eval_episodes`` episodes with the test seed) is
an independent estimate of the same solution's return. Near the threshold it can fall on either side of
it; it does not redefine "solved".
"""

from __future__ import annotations

from typing import Any

SOLVE_CHECK_SEED = 1_500_000_000  # apart from the generations' own seeds and from the test's


def solve_seed(generation: int) -> int:
    """Episodes of the check of the solution after ``generation`` generations."""
    return SOLVE_CHECK_SEED + generation


def solve_check(problem: Any, genome: Any, generation: int) -> dict[str, float]:
    """The one evaluation that decides whether the solution after ``generation`` generations solves
    ``problem``: its mean return over the problem's ``eval_episodes`` episodes of :func:`solve_seed`."""
    returns = problem.evaluate_solution(genome, seed=solve_seed(generation))
    mean = float(returns.mean())
    return {
        "solve_return": mean,
        "solve_episodes": float(len(returns)),
        "solve_generation": float(generation),
        "solved": float(mean >= problem.solved_at),
    }


def solved_line(check: dict[str, float], evaluations: int, solved_at: float) -> str:
    """The console line of a solved run, written from the check's own numbers."""
    return (
        f"[metalab] solved after {int(check['solve_generation'])} generations ({evaluations} evaluations): "
        f"mean return {check['solve_return']:.2f} over {int(check['solve_episodes'])} solve-check episodes "
        f">= {solved_at:g} (test/solved and test/solve_return report this check)"
    )
