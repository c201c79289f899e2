"""Backend selection; bad-input errors where a kernel runs; the torch path is the reference math."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metalab.kernels._dispatch as dispatch
import metalab.kernels.inner_step as iu
from metalab import kernels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def auto_backend():
    """Run with the global backend at "auto" (whatever $METALAB_KERNELS_BACKEND said), restore it."""
    previous = kernels.get_backend()
    kernels.set_backend("auto")
    yield
    kernels.set_backend(previous)


def test_backend_names_and_context_manager(auto_backend):
    assert kernels.get_backend() == "auto"
    with kernels.backend("torch"):
        assert kernels.get_backend() == "torch"
        with kernels.backend("triton"):
            assert kernels.get_backend() == "triton"
        assert kernels.get_backend() == "torch"
    assert kernels.get_backend() == "auto"
    with pytest.raises(ValueError, match="one of"):
        kernels.set_backend("cuda")
    with pytest.raises(ValueError, match="one of"):
        with kernels.backend("tritn"):
            pass


def test_set_backend_is_global(auto_backend):
    import threading

    kernels.set_backend("torch")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(kernels.get_backend()))
    worker.start()
    worker.join()
    assert kernels.get_backend() == "torch" and seen == ["torch"]
    with kernels.backend("triton"):  # a context override is per thread
        worker = threading.Thread(target=lambda: seen.append(kernels.get_backend()))
        worker.start()
        worker.join()
    assert seen == ["torch", "torch"]


def _sentinel(*args, **kwargs):
    raise RuntimeError("triton kernel launched")


def test_auto_uses_torch_on_cpu_and_triton_when_forced(monkeypatch, auto_backend):
    monkeypatch.setattr(iu, "_launch_fwd", _sentinel)
    theta, grads = torch.randn(5), torch.randn(2, 5)
    for name in ("auto", "torch"):
        with kernels.backend(name):
            torch.testing.assert_close(kernels.inner_update(theta, grads, 0.1), theta - 0.1 * grads)
    with kernels.backend("triton"), pytest.raises(RuntimeError, match="triton kernel launched"):
        kernels.inner_update(theta, grads, 0.1)


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dispatch, "interpreter_active", lambda: False)
    with kernels.backend("triton"), pytest.raises(ValueError, match="`theta` is on cpu.*TRITON_INTERPRET"):
        kernels.inner_update(torch.randn(5), torch.randn(2, 5), 0.1)
    with kernels.backend("triton"), pytest.raises(ValueError, match="`fisher` is on cpu"):
        kernels.ewc_penalty(torch.rand(3), torch.randn(3), torch.randn(3))


def test_forced_triton_without_interpreter_in_a_fresh_process():
    # End to end: a process that never set TRITON_INTERPRET gets compiled (not interpreted)
    # kernels, and forcing them onto CPU tensors must fail with our message, not a Triton crash.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import torch, kernels\n"
        "assert not kernels.interpreter_active()\n"
        "kernels.set_backend('triton')\n"
        "try:\n"
        "    kernels.linear_fisher(torch.randn(4, 3), torch.randn(4, 2))\n"
        "except ValueError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR linear_fisher" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_picks_triton_on_cuda(monkeypatch):  # pragma: no cover - no GPU in CI
    monkeypatch.setattr(iu, "_launch_fwd", _sentinel)
    with pytest.raises(RuntimeError, match="triton kernel launched"):
        kernels.inner_update(torch.randn(5, device="cuda"), torch.randn(2, 5, device="cuda"), 0.1)


# ------------------------------------------------------------------------------ bad inputs

NONCONTIG = torch.randn(5, 2).T  # [2, 5], not contiguous


def _bad_inputs():
    """(op, kwargs, exception, message regex) for every op; each names the offending argument."""
    f, g = torch.randn(5), torch.randn(2, 5)
    a, d = torch.randn(4, 3), torch.randn(4, 2)
    x, y, w, b = torch.randn(2, 4, 3), torch.randint(0, 2, (2, 4)), torch.randn(3, 2), torch.randn(2)
    return [
        # inner_update
        ("inner_update", dict(theta=torch.randn(6), grads=g, lr=0.1), ValueError, "`theta`.*expected \\[5\\]"),
        ("inner_update", dict(theta=torch.randn(3, 5), grads=g, lr=0.1), ValueError, "`theta`"),
        ("inner_update", dict(theta=f, grads=f, lr=0.1), ValueError, "`grads` must have shape \\[T, P\\]"),
        ("inner_update", dict(theta=f, grads=NONCONTIG, lr=0.1), ValueError, "`grads` must be contiguous"),
        ("inner_update", dict(theta=f, grads=g.int(), lr=0.1), TypeError, "`grads` has dtype torch.int32"),
        ("inner_update", dict(theta=f.double(), grads=g, lr=0.1), TypeError, "`grads` has dtype .* `theta`"),
        ("inner_update", dict(theta=f, grads=g, lr=torch.rand(4)), ValueError, "`lr`.*\\[5\\]"),
        ("inner_update", dict(theta=f, grads=g, lr=torch.rand(5).double()), TypeError, "`lr` has dtype"),
        ("inner_update", dict(theta=f, grads=g, lr="0.1"), TypeError, "`lr` must be a Python float"),
        ("inner_update", dict(theta=f, grads=g, lr=float("nan")), ValueError, "`lr` must be finite"),
        ("inner_update", dict(theta=f.to("meta"), grads=g, lr=0.1), ValueError, "`grads` is on cpu but `theta`"),
        ("inner_update", dict(theta=[0.0] * 5, grads=g, lr=0.1), TypeError, "`theta` must be a torch.Tensor"),
        # anil_head_adapt
        (
            "anil_head_adapt",
            dict(features=x, labels=y.int(), weight=w, bias=b, lr=0.1, steps=1),
            TypeError,
            "`labels` has dtype",
        ),
        (
            "anil_head_adapt",
            dict(features=x, labels=y + 1, weight=w, bias=b, lr=0.1, steps=1),
            ValueError,
            "`labels` must lie in \\[0, 1\\]",
        ),
        (
            "anil_head_adapt",
            dict(features=x, labels=y[:, :3].contiguous(), weight=w, bias=b, lr=0.1, steps=1),
            ValueError,
            "`labels` has shape",
        ),
        (
            "anil_head_adapt",
            dict(features=x, labels=y, weight=torch.randn(4, 2), bias=b, lr=0.1, steps=1),
            ValueError,
            "`weight` has shape",
        ),
        (
            "anil_head_adapt",
            dict(features=x, labels=y, weight=w, bias=torch.randn(3), lr=0.1, steps=1),
            ValueError,
            "`bias` has shape",
        ),
        (
            "anil_head_adapt",
            dict(features=x, labels=y, weight=w, bias=b.double(), lr=0.1, steps=1),
            TypeError,
            "`bias` has dtype",
        ),
        (
            "anil_head_adapt",
            dict(features=x.transpose(1, 2), labels=y, weight=w, bias=b, lr=0.1, steps=1),
            ValueError,
            "`features` must be contiguous",
        ),
        ("anil_head_adapt", dict(features=x, labels=y, weight=w, bias=b, lr=0.1, steps=-1), ValueError, "`steps`"),
        (
            "anil_head_adapt",
            dict(features=x[0], labels=y, weight=w, bias=b, lr=0.1, steps=1),
            ValueError,
            "`features` must have shape \\[T, N, D\\]",
        ),
        # fisher_accumulate
        (
            "fisher_accumulate",
            dict(fisher=torch.rand(4), per_sample_grads=g, gamma=0.9),
            ValueError,
            "`fisher` has shape",
        ),
        (
            "fisher_accumulate",
            dict(fisher=f, per_sample_grads=NONCONTIG, gamma=0.9),
            ValueError,
            "`per_sample_grads` must be contiguous",
        ),
        (
            "fisher_accumulate",
            dict(fisher=f, per_sample_grads=g.long(), gamma=0.9),
            TypeError,
            "`per_sample_grads` has dtype",
        ),
        ("fisher_accumulate", dict(fisher=f, per_sample_grads=g, gamma=-0.1), ValueError, "`gamma` must be >= 0"),
        ("fisher_accumulate", dict(fisher=f, per_sample_grads=torch.randn(0, 5), gamma=0.9), ValueError, "N, P >= 1"),
        # linear_fisher
        (
            "linear_fisher",
            dict(activations=a, output_grads=torch.randn(5, 2)),
            ValueError,
            "`output_grads` has 5 samples",
        ),
        (
            "linear_fisher",
            dict(activations=a[:, 0], output_grads=d),
            ValueError,
            "`activations` must have shape \\[N, Din\\]",
        ),
        (
            "linear_fisher",
            dict(activations=torch.randn(3, 4).T, output_grads=d),
            ValueError,
            "`activations` must be contiguous",
        ),
        (
            "linear_fisher",
            dict(activations=a, output_grads=d.to(torch.complex64)),
            TypeError,
            "`output_grads` has dtype",
        ),
        ("linear_fisher_bias", dict(output_grads=d[:, 0]), ValueError, "`output_grads` must have shape"),
        # ewc_penalty
        ("ewc_penalty", dict(fisher=torch.rand(4), theta=f, theta_star=f), ValueError, "`fisher` has shape"),
        ("ewc_penalty", dict(fisher=f, theta=f, theta_star=f.double()), TypeError, "`theta_star` has dtype"),
        (
            "ewc_penalty",
            dict(fisher=torch.rand(3, 4).T, theta=torch.randn(4, 3), theta_star=torch.randn(4, 3)),
            ValueError,
            "`fisher` must be contiguous",
        ),
        ("ewc_penalty", dict(fisher=f.int(), theta=f, theta_star=f), TypeError, "`fisher` has dtype"),
    ]


@pytest.mark.parametrize("op,kwargs,exc,pattern", _bad_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_is_a_clear_error_where_the_kernel_runs(op, kwargs, exc, pattern):
    with kernels.backend("triton"), pytest.raises(exc, match=pattern) as info:
        getattr(kernels, op)(**kwargs)
    assert str(info.value).startswith(op + ":"), str(info.value)


def test_torch_path_is_the_math_without_the_kernel_checks(monkeypatch):
    # The kernel's contract (contiguous rows, [T, P] shapes) guards raw memory indexing; the torch path
    # needs none of it: a transposed gradient and a [T, *S] parameter go straight through the formula.
    monkeypatch.setattr(dispatch, "check_tensor", _sentinel)
    monkeypatch.setattr(iu, "check_tensor", _sentinel)
    theta, grads = torch.randn(5), torch.randn(5, 2).T
    with kernels.backend("torch"):
        torch.testing.assert_close(kernels.inner_update(theta, grads, 0.1), theta - 0.1 * grads, rtol=0, atol=0)
        params, g, rates = {"w": torch.randn(3, 4)}, {"w": torch.randn(2, 3, 4)}, {"w": torch.rand(3, 4)}
        out = kernels.inner_update_params(params, g, rates)
        torch.testing.assert_close(out["w"], params["w"] - rates["w"] * g["w"], rtol=0, atol=0)
