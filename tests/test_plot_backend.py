"""Plot helpers draw on figures of their own and never switch matplotlib's global backend (issue 37: a
helper's ``matplotlib.use("Agg")`` silenced the inline backend of the notebook that called it)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch


@pytest.fixture
def backend_untouched(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a plot helper called matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", refuse)
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before  # nothing left open in pyplot's registry either


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_matrix_heatmap(tmp_path, backend_untouched):
    from metalab.metrics.continual import plot_accuracy_matrix

    assert _is_png(plot_accuracy_matrix(torch.rand(3, 3) * 100, tmp_path / "r.png", "R"))


def test_cell_drawing(tmp_path, backend_untouched):
    from metalab.nas.plot import draw_cell
    from metalab.nas.space import Genotype

    ops = ("nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
    assert _is_png(draw_cell(Genotype(ops), tmp_path / "cell.png"))


def test_pareto_front(tmp_path, backend_untouched):
    from metalab.search.plots import write_pareto_front
    from metalab.search.problems import ZDT

    points = np.stack([np.linspace(0, 1, 5), 1 - np.sqrt(np.linspace(0, 1, 5))], axis=1)
    searcher = SimpleNamespace(pareto_front=lambda: (None, -points))  # fitness is maximised: minus the objectives
    assert _is_png(write_pareto_front(searcher, ZDT(1, n_variables=4), tmp_path))
