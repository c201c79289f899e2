"""A search run on the plain loop: each step is one generation (ask, evaluate, tell).

The shell holds no search logic: :func:`metalab.search.loop.run_generation` does the generation and the
searcher keeps its own state. A search has no gradient step, so it does not run inside Lightning's loop
(which counts optimiser steps); :mod:`metalab.plain_loop` gives it what every run has: the budget keys of
the config (``trainer.max_steps`` generations, ``trainer.max_time``), curves of best and mean fitness per
generation through the run's loggers, ``checkpoints/last.ckpt`` every ``checkpoint_every`` generations and at
the end (the searcher's state rides in it), resume with ``ckpt_path=last``, a clean stop on SIGTERM, and the
run record written by :func:`metalab.run.train`.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metalab.errors import ConfigError, require
from metalab.plain_loop import LoopSettings, as_logged, load_checkpoint, save_checkpoint
from metalab.search.base import Searcher
from metalab.search.loop import run_generation
from metalab.search.problems import Problem
from metalab.search.solved import solve_check, solved_line

TEST_SEED = 2_000_000_000  # held-out evaluation seeds apart from the generations' own and the solve check's


class SearchRun:
    """``problem``: the :class:`~metalab.search.problems.Problem` (the config's ``problem`` group); ``searcher``:
    a partial that gets the problem's space and the run's seed.

    ``stop_when_solved``: when the problem has a ``solved_at`` return and a generation's best candidate
    reaches it, the searcher's solution gets the solve check (:func:`metalab.search.solved.solve_check`)
    and the run stops if it passes (so ``train/wall_seconds`` is the time to solve). The console line and
    ``test/solved`` both quote that one check."""

    # A search's results (returns, fronts) must not depend on the CPU: ``trainer.precision: auto`` is fp32 here.
    fixed_precision = "32-true"

    def __init__(
        self,
        problem: Problem,
        searcher: Callable[..., Searcher],
        seed: int = 0,
        stop_when_solved: bool = False,
        checkpoint_every: int = 10,
    ) -> None:
        require(checkpoint_every >= 1, "learner.checkpoint_every", ">= 1", checkpoint_every)
        self.problem, self.seed, self.stop_when_solved = problem, int(seed), stop_when_solved
        self.checkpoint_every = checkpoint_every
        self.searcher = searcher(space=problem.space, seed=int(seed))
        wanted = getattr(problem, "objectives", 1)
        given = getattr(self.searcher, "objectives", wanted)
        if given != wanted:  # checked here, before the search: tell() would only fail after the first generation
            raise ConfigError(
                f"learner.searcher.objectives={given!r} is not allowed: learner.searcher.objectives must be "
                f"{wanted}, the number of objectives of the problem {type(problem).__name__}"
            )
        self.generations_done = 0
        self.evaluations = 0
        self.solved_generation: int | None = None
        self.solve: dict[str, float] | None = None  # the last solve check (metalab.search.solved)
        self.output_dir = Path(".")

    @property
    def global_step(self) -> int:
        return self.generations_done

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(self, settings: LoopSettings, ckpt_path: str | None) -> tuple[dict[str, float], dict[str, Any]]:
        """Generations until the step limit, ``max_time``, a signal or a solve; returns the last logged figures
        and the record's ``stopped`` entry."""
        self.output_dir = settings.output_dir
        if ckpt_path is not None:
            self.restore(ckpt_path)
        limit, started, logged, reason = settings.step_limit(), time.perf_counter(), {}, None
        if settings.signals is not None:
            settings.signals.install()
        self.on_fit_start()
        try:
            while reason is None:
                reason = self._stop_reason(settings, limit, started)
                if reason is None:
                    figures, solved = self.generation()
                    logged.update(figures)
                    stopping = solved or self._stop_reason(settings, limit, started) is not None
                    if (self.generations_done % max(1, settings.log_every_n_steps) == 0) or stopping:
                        settings.log(figures, step=self.generations_done - 1)
                    if solved:
                        reason = "solved (learner.stop_when_solved)"
                    if not settings.fast_dev_run and (stopping or self.generations_done % self.checkpoint_every == 0):
                        self.save(settings)
        finally:
            if settings.signals is not None:
                settings.signals.restore()
        self.on_fit_end()
        return logged, {
            "reason": reason,
            "global_step": self.global_step,
            "epoch": self.generations_done // self.checkpoint_every,
            "train_seconds": time.perf_counter() - started,
            "time_budget": None,
        }

    def _stop_reason(self, settings: LoopSettings, limit: int | None, started: float) -> str | None:
        if settings.signals is not None and settings.signals.received:
            return f"signal {settings.signals.received}"
        if settings.fast_dev_run and self.generations_done >= settings.fast_dev_run:
            return f"trainer.fast_dev_run={settings.fast_dev_run} (debug: that many generations)"
        if settings.max_seconds is not None and time.perf_counter() - started >= settings.max_seconds:
            return "max_time"
        if limit is not None and self.generations_done >= limit:
            return "max_steps"
        return None

    def generation(self) -> tuple[dict[str, float], bool]:
        """One generation; its figures (``train/...``) and whether the problem counts it as solved."""
        summary = run_generation(self.searcher, self.problem, self.seed, self.generations_done)
        self.generations_done += 1
        self.evaluations += int(summary.pop("evaluations"))
        figures = {f"train/{key}": as_logged(value) for key, value in summary.items()}
        figures["train/evaluations"] = as_logged(self.evaluations)
        solved_at = getattr(self.problem, "solved_at", None)
        if self.stop_when_solved and solved_at is not None and summary.get("best_fitness", -math.inf) >= solved_at:
            self.solve = solve_check(self.problem, self.searcher.best().genome, self.generations_done)
            figures["train/solution_return"] = as_logged(self.solve["solve_return"])
            if self.solve["solved"]:
                self.solved_generation = self.generations_done
                return figures, True
        return figures, False

    def on_fit_start(self) -> None:
        """Called before the first generation (subclasses start clocks here)."""

    def on_fit_end(self) -> None:
        if self.solved_generation is not None:
            print(solved_line(self.solve, self.evaluations, self.problem.solved_at))

    def test(self, settings: LoopSettings) -> dict[str, float]:
        """The problem's final figures of the search's result (``test/...``), logged at the last generation."""
        self.output_dir = settings.output_dir
        figures = self.problem.assess(self.searcher, seed=TEST_SEED + self.seed)
        figures.update(self._final_solve_check())
        figures["generations"] = float(self.generations_done)
        figures["evaluations"] = float(self.evaluations)
        if self.solved_generation is not None:
            figures["generations_to_solve"] = float(self.solved_generation)
        metrics = {f"test/{key}": as_logged(value) for key, value in figures.items()}
        settings.log(metrics, step=self.generations_done)
        settings.finish_logging()
        if getattr(self.problem, "objectives", 1) == 2 and hasattr(self.searcher, "pareto_front"):
            from metalab.search.plots import write_pareto_front

            write_pareto_front(self.searcher, self.problem, settings.output_dir)
        return metrics

    def _final_solve_check(self) -> dict[str, float]:
        """``solved`` and its numbers for the final solution: the check training made of it, if it made
        one, else that same check made now (never a second, different evaluation)."""
        if getattr(self.problem, "solved_at", None) is None:
            return {}
        if self.solve is None or int(self.solve["solve_generation"]) != self.generations_done:
            self.solve = solve_check(self.problem, self.searcher.best().genome, self.generations_done)
        return dict(self.solve)

    # -- checkpoints: the searcher's state as one uint8 tensor of its pickle, so the file holds only tensors and
    # plain values and loads with torch.load(weights_only=True), as every other checkpoint of the project.
    def save(self, settings: LoopSettings) -> None:
        save_checkpoint(settings.checkpoint_dir / "last.ckpt", self.global_step, self.state())

    def restore(self, ckpt_path: str) -> None:
        self.load_state(load_checkpoint(ckpt_path))

    def state(self) -> dict[str, Any]:
        state = {
            "searcher": self.searcher.state_dict(),
            "generations_done": self.generations_done,
            "evaluations": self.evaluations,
            "solved_generation": self.solved_generation,
            "solve": self.solve,
        }
        return {"search_state": torch.frombuffer(bytearray(pickle.dumps(state)), dtype=torch.uint8)}

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        state = pickle.loads(checkpoint["search_state"].numpy().tobytes())
        self.searcher.load_state_dict(state["searcher"])
        self.generations_done, self.evaluations = int(state["generations_done"]), int(state["evaluations"])
        self.solved_generation, self.solve = state["solved_generation"], state.get("solve")
