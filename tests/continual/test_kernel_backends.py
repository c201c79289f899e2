"""The continual learner gives the same results with kernels.backend=torch and =triton (interpreted):
EWC's penalty goes through the fused kernels.ewc_penalty when Triton runs."""

from __future__ import annotations

import json

import pytest
import torch

from continual.helpers import run_stream
from metalab import kernels
from metalab.learners.continual import EWC


@pytest.mark.parametrize("online", [False, True])
def test_ewc_same_with_torch_and_triton_backends(tmp_path, online, monkeypatch):
    if not kernels.interpreter_active():
        pytest.skip("Triton runs on CPU only with TRITON_INTERPRET=1 set before import")
    calls = []
    fused = kernels.ewc_penalty
    monkeypatch.setattr(kernels, "ewc_penalty", lambda *a, **k: calls.append(1) or fused(*a, **k))
    records = {}
    for backend in ("torch", "triton"):
        with kernels.backend(backend):
            run_stream(EWC(ewc_lambda=5.0, online=online, seed=0), tmp_path / backend, seed=0)
        assert bool(calls) == (backend == "triton"), "the fused penalty must run exactly on the triton backend"
        records[backend] = json.loads((tmp_path / backend / "continual_metrics.json").read_text())
    for scenario in ("class_il", "task_il"):
        r_torch, r_triton = records["torch"][scenario]["R"], records["triton"][scenario]["R"]
        assert torch.allclose(torch.tensor(r_torch), torch.tensor(r_triton), atol=1e-6), scenario
