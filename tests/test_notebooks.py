"""The notebooks run top to bottom on tiny settings (METALAB_NOTEBOOK_TINY=1), so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import data_available

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DATA_READ = {"quickstart": "omniglot/omniglot.npz", "continual": "mnist/mnist.npz"}  # reading_records reads none
DRAWS = {"continual"}  # notebooks whose figures must show in the output (an image/png), as in a real kernel


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "continual", "reading_records"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    needed = DATA_READ.get(path.stem)
    if needed and not data_available(needed):
        pytest.skip(f"shared/data/{needed} not found")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("METALAB_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # no MPLBACKEND forced: the kernel's own inline backend, as a user's; a plot helper that switched the
    # global backend (matplotlib.use("Agg")) left continual.ipynb's heatmap unshown (issue 37)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if path.stem in DRAWS:
        images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, "no figure was shown"
