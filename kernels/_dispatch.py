"""Backend selection and input validation shared by every kernel op.

Why one module: every public op (``inner_update``, ``anil_head_adapt``, ``fisher_accumulate``,
``linear_fisher``, ``ewc_penalty``) must make the same decision ("Triton or torch?") and reject the
same bad inputs with the same kind of message when a kernel runs.

Where validation runs: only on the Triton path. A kernel indexes raw memory with row-major strides and
fixed dtypes, so a wrong shape, stride or dtype there reads the wrong numbers silently; the checks
below turn that into one clear error. The torch path *is* the reference math (plain torch ops with
torch's own shape and dtype errors), so on the CPU an op reads as its formula and costs what the
formula costs. The kernel tests force the Triton backend under ``TRITON_INTERPRET=1``, so the checks
are exercised on CPU too.

Backends:
  ``"auto"``   (default) Triton kernels on CUDA tensors, torch references everywhere else.
  ``"torch"``  always the torch reference.
  ``"triton"`` always the Triton kernel. On CPU tensors this is only possible with Triton's
               interpreter (``TRITON_INTERPRET=1`` set *before* ``kernels`` is imported, because
               ``triton.jit`` decides at decoration time); otherwise a ``ValueError`` says so.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

# Supported floating dtypes. Reductions always accumulate in float32 (float64 for float64 inputs).
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

_state = threading.local()
_default_backend: str = os.environ.get("METALAB_KERNELS_BACKEND", "auto")
if _default_backend not in BACKENDS:  # fail at import rather than at the first kernel call
    raise ValueError(f"METALAB_KERNELS_BACKEND={_default_backend!r} is not a kernels backend; allowed: {BACKENDS}")


def set_backend(name: str) -> None:
    """Set the process-wide backend (``"auto"``, ``"torch"`` or ``"triton"``).

    Called once from the run entry point with ``cfg.kernels.backend``; tests use :func:`backend`.
    """
    global _default_backend
    _check_name(name)
    _default_backend = name
    _state.override = None  # a global set wins over a stale override of this thread


def get_backend() -> str:
    """The backend in force for the calling thread (a :func:`backend` block, else the global)."""
    override = getattr(_state, "override", None)
    return override if override is not None else _default_backend


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Temporarily force a backend in this thread: ``with kernels.backend("triton"): ...``."""
    _check_name(name)
    previous = getattr(_state, "override", None)
    _state.override = name
    try:
        yield
    finally:
        _state.override = previous


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"kernels backend must be one of {BACKENDS}, got {name!r}")


def interpreter_active() -> bool:
    """True if this process's Triton kernels were built for the CPU interpreter.

    The decision is taken when ``triton.jit`` decorates a kernel, i.e. when ``kernels`` is first
    imported, so we ask a kernel object rather than re-reading the environment variable (setting
    ``TRITON_INTERPRET=1`` after import has no effect, and we must not pretend it does).
    """
    from metalab.kernels._triton_probe import probe_kernel

    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - triton without an interpreter
        return False
    return isinstance(probe_kernel, InterpretedFunction)


def triton_runs(device: torch.device) -> bool:
    """Whether ops on ``device`` take their Triton path under the backend in force: for callers that
    choose between a fused kernel and their own torch code (never raises; the op validates later)."""
    name = get_backend()
    if name == "torch":
        return False
    return name == "triton" or (device.type == "cuda" and _triton_importable())


def triton_chosen(tensors: dict[str, object]) -> bool:
    """Whether a call on these arguments goes to its Triton kernel (to be validated first) rather
    than to the torch reference: the backend is forced to Triton, or it is "auto" and every tensor
    argument is on CUDA. Never raises; :func:`use_triton` gives the errors of a forced backend."""
    name = get_backend()
    if name == "torch":
        return False
    if name == "triton":
        return True
    on_cuda = [t.is_cuda for t in tensors.values() if isinstance(t, torch.Tensor)]  # a float lr is no tensor
    return bool(on_cuda) and all(on_cuda) and _triton_importable()


def use_triton(op: str, tensors: dict[str, torch.Tensor]) -> bool:
    """Decide whether ``op`` runs its Triton kernel on these (already validated) tensors.

    ``tensors`` maps argument names to tensors so that every error names the argument at fault.
    """
    name = get_backend()
    if name == "torch":
        return False
    on_cuda = {arg: t.is_cuda for arg, t in tensors.items()}
    if name == "auto":
        return all(on_cuda.values()) and _triton_importable()
    # Forced Triton.
    if not _triton_importable():
        raise ValueError(f"{op}: kernels backend 'triton' is forced but triton cannot be imported")
    if all(on_cuda.values()):
        return True
    if not interpreter_active():
        arg = next(a for a, c in on_cuda.items() if not c)
        raise ValueError(
            f"{op}: kernels backend 'triton' is forced but `{arg}` is on "
            f"{tensors[arg].device}; Triton runs CPU tensors only under its interpreter "
            "(set TRITON_INTERPRET=1 before importing `kernels`), or use backend 'auto'/'torch'"
        )
    return True


_TRITON_OK: bool | None = None


def _triton_importable() -> bool:
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401

            _TRITON_OK = True
        except ImportError:  # pragma: no cover - triton is a declared dependency
            _TRITON_OK = False
    return _TRITON_OK


# ---------------------------------------------------------------------------------------------
# Validation. Every message names the op and the argument, and says what was expected.
# ---------------------------------------------------------------------------------------------


def check_tensor(
    op: str,
    arg: str,
    t: object,
    *,
    ndims: tuple[int, ...],
    shape_doc: str,
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
) -> torch.Tensor:
    """Raise ``TypeError``/``ValueError`` unless ``t`` is a contiguous tensor of the given rank/dtype.

    Contiguity is required (not silently fixed with ``.contiguous()``) because the kernels index
    raw memory with row-major strides, and a hidden copy of a large stacked parameter tensor would
    be a surprise in the hot loop; the caller decides whether to copy.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{arg}` must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dim() not in ndims:
        raise ValueError(f"{op}: `{arg}` must have shape {shape_doc}, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: `{arg}` has dtype {t.dtype}; supported dtypes are {dtypes}")
    if not t.is_contiguous():
        raise ValueError(
            f"{op}: `{arg}` must be contiguous (shape {tuple(t.shape)}, strides {t.stride()}); "
            "call .contiguous() on it first"
        )
    return t


def check_same_device(op: str, tensors: dict[str, torch.Tensor]) -> None:
    """All tensor arguments of one op must live on one device."""
    items = list(tensors.items())
    first_arg, first = items[0]
    for arg, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}: `{arg}` is on {t.device} but `{first_arg}` is on {first.device}; "
                "all tensor arguments must be on the same device"
            )


def check_same_dtype(op: str, tensors: dict[str, torch.Tensor]) -> None:
    """Arguments combined elementwise must share a dtype (no silent promotion)."""
    items = list(tensors.items())
    first_arg, first = items[0]
    for arg, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{op}: `{arg}` has dtype {t.dtype} but `{first_arg}` has dtype {first.dtype}; "
                "they must match (cast one of them explicitly)"
            )


def check_float(op: str, arg: str, value: object, *, low: float | None = None) -> float:
    """A Python number argument (e.g. a learning rate or decay) as a float, range-checked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: `{arg}` must be a Python float, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{op}: `{arg}` must be finite, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{op}: `{arg}` must be >= {low}, got {value}")
    return value


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
