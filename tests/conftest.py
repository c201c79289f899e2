"""Test settings shared by every test: Triton's CPU interpreter, offline W&B, few threads."""

import os

# Must be set before triton is imported anywhere: without a GPU, triton only runs interpreted.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# Benchmarks run by tests append their records here, not to the committed benchmarks/*/records/.
os.environ.setdefault("METALAB_RECORDS_DIR", __import__("tempfile").mkdtemp(prefix="metalab-records-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from metalab.data.files import CHECKSUMS  # noqa: E402


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


# Kept in helpers.py: a test module imports them from there (``from conftest import`` would find
# whichever conftest.py was loaded last, e.g. tests/services/conftest.py).
from helpers import data_available, needs_omniglot  # noqa: E402,F401

assert "omniglot/omniglot.npz" in CHECKSUMS
