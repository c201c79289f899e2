"""A search run as a LightningModule: each training step is one generation (ask, evaluate, tell).

The shell holds no search logic: :func:`metalab.search.loop.run_generation` does the generation and the
searcher keeps its own state. Lightning contributes what every other run has: the progress bar, CSV/W&B
curves of best and mean fitness per generation, a checkpoint per epoch (the searcher's state rides in
it) and resume with ``ckpt_path=last``. Optimisation is manual; the optimiser is a no-op over one empty
parameter whose only job is to make Lightning count generations as steps, since its ``max_steps``, its
logging intervals and its checkpoint bookkeeping all key on optimiser steps.
"""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch

from metalab.search.base import Searcher
from metalab.search.loop import evaluation_seed, run_generation
from metalab.search.problems import Problem
from metalab.search.solved import solve_check, solved_line

TEST_SEED = 2_000_000_000  # held-out evaluation seeds apart from the generations' own and the solve check's


class SearchLearner(L.LightningModule):
    """``backbone`` is the :class:`~metalab.search.problems.Problem` (run.py passes ``cfg.model`` under
    that name); ``searcher`` is a partial that gets the problem's space and the run's seed.

    ``stop_when_solved``: when the problem has a ``solved_at`` return and a generation's best candidate
    reaches it, the searcher's solution gets the solve check (:func:`metalab.search.solved.solve_check`)
    and the run stops if it passes (so ``train/wall_seconds`` is the time to solve). The console line and
    ``test/solved`` both quote that one check."""

    def __init__(self, backbone: Problem, searcher: Callable[..., Searcher], seed: int = 0,
                 stop_when_solved: bool = False) -> None:
        super().__init__()
        self.problem, self.seed, self.stop_when_solved = backbone, int(seed), stop_when_solved
        self.searcher = searcher(space=backbone.space, seed=int(seed))
        self.automatic_optimization = False
        self._step_counter = torch.nn.Parameter(torch.zeros(0))
        self.generations_done = 0
        self.evaluations = 0
        self.solved_generation: int | None = None
        self.solve: dict[str, float] | None = None  # the last solve check (metalab.search.solved)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self._step_counter], lr=0.0)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        summary = run_generation(self.searcher, self.problem, self.seed, self.generations_done)
        self.generations_done += 1
        self.evaluations += int(summary.pop("evaluations"))
        for key, value in summary.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, prog_bar=key.startswith("best"))
        self.log("train/evaluations", float(self.evaluations), on_step=True, on_epoch=False)
        self.optimizers().step()  # counts the generation (see the module docstring)
        solved_at = getattr(self.problem, "solved_at", None)
        if self.stop_when_solved and solved_at is not None and summary.get("best_fitness", -math.inf) >= solved_at:
            self.solve = solve_check(self.problem, self.searcher.best().genome, self.generations_done)
            self.log("train/solution_return", self.solve["solve_return"], on_step=True, on_epoch=False)
            if self.solve["solved"]:
                self.solved_generation = self.generations_done
                self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if self.solved_generation is not None:
            self.print(solved_line(self.solve, self.evaluations, self.problem.solved_at))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        figures = self.problem.assess(self.searcher, seed=TEST_SEED + self.seed)
        figures.update(self._final_solve_check())
        figures["generations"] = float(self.generations_done)
        figures["evaluations"] = float(self.evaluations)
        if self.solved_generation is not None:
            figures["generations_to_solve"] = float(self.solved_generation)
        for key, value in figures.items():
            self.log(f"test/{key}", value)
        if getattr(self.problem, "objectives", 1) == 2 and hasattr(self.searcher, "pareto_front"):
            from metalab.search.plots import write_pareto_front
            write_pareto_front(self.searcher, self.problem, Path(self.trainer.default_root_dir))

    def _final_solve_check(self) -> dict[str, float]:
        """``solved`` and its numbers for the final solution: the check training made of it, if it made
        one, else that same check made now (never a second, different evaluation)."""
        if getattr(self.problem, "solved_at", None) is None:
            return {}
        if self.solve is None or int(self.solve["solve_generation"]) != self.generations_done:
            self.solve = solve_check(self.problem, self.searcher.best().genome, self.generations_done)
        return dict(self.solve)

    # The searcher's state as one uint8 tensor of its pickle: checkpoints then hold only tensors and plain
    # values and load with torch.load(weights_only=True), as every other checkpoint of the project.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {"searcher": self.searcher.state_dict(), "generations_done": self.generations_done,
                 "evaluations": self.evaluations, "solved_generation": self.solved_generation, "solve": self.solve}
        checkpoint["search_state"] = torch.frombuffer(bytearray(pickle.dumps(state)), dtype=torch.uint8)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = pickle.loads(checkpoint["search_state"].numpy().tobytes())
        self.searcher.load_state_dict(state["searcher"])
        self.generations_done, self.evaluations = int(state["generations_done"]), int(state["evaluations"])
        self.solved_generation, self.solve = state["solved_generation"], state.get("solve")
