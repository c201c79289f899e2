"""The Pareto front of a finished multi-objective search: a PNG beside the run's metrics, and its points as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_pareto_front(searcher: Any, problem: Any, directory: Path) -> Path:
    """``pareto_front.png`` (our front over the problem's true front, objectives minimised) and ``pareto_front.csv``."""
    from matplotlib.figure import Figure  # a figure of its own: pyplot's global backend is left alone

    _, fitness = searcher.pareto_front()
    objectives = -fitness  # fitness is maximised; the problems' objectives are minimised
    objectives = objectives[np.argsort(objectives[:, 0])]
    directory.mkdir(parents=True, exist_ok=True)
    np.savetxt(directory / "pareto_front.csv", objectives, delimiter=",", header="f1,f2", comments="")
    figure = Figure(figsize=(5, 4))
    axes = figure.subplots()
    if hasattr(problem, "true_front"):
        true = problem.true_front()
        axes.plot(true[:, 0], true[:, 1], ".", color="0.7", markersize=1, label="true front")
    axes.plot(objectives[:, 0], objectives[:, 1], "o", markersize=3, label=f"found ({len(objectives)} points)")
    name = f"ZDT{problem.variant}" if hasattr(problem, "variant") else type(problem).__name__
    axes.set(xlabel="f1", ylabel="f2", title=f"{name}: non-dominated set after the search")
    axes.legend()
    figure.tight_layout()
    path = directory / "pareto_front.png"
    figure.savefig(path, dpi=120)
    return path
