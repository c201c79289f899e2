"""``trainer.precision: auto``: bf16 autocast only where the hardware runs bf16 natively.

bf16 autocast pays off only on hardware with bf16 arithmetic: a CUDA device that supports it, or a CPU
with AVX-512 BF16 or AMX. Elsewhere torch emulates bf16 and the same run is far slower (ProtoNet Conv4
on Omniglot, one core of an AMD EPYC Zen 3 without AVX-512: 0.22 episodes/s under bf16-mixed against
2.27 under 32-true, issue 23). So experiments say ``auto`` and :func:`resolve_precision` picks the
Lightning precision for the machine the run is on, with the reason, before the Trainer is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metalab.environment import cpu_info
from metalab.errors import ConfigError

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"
# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT_STR) and the short aliases it accepts.
LIGHTNING_PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
                        "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 instructions
CPU_BF16_SLOWDOWN = ("measured ~10x slower than 32-true on such a CPU (ProtoNet Conv4 on Omniglot, one core of "
                     "an AMD EPYC Zen 3 without AVX-512: 0.22 episodes/s bf16-mixed vs 2.27 episodes/s 32-true)")


@dataclass(frozen=True)
class PrecisionChoice:
    """The Lightning precision a run uses, why, and a warning when a forced choice will be slow."""

    requested: str
    precision: str
    reason: str
    warning: str | None = None

    def record(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.precision, "reason": self.reason, "warning": self.warning}


def uses_cuda(accelerator: str | None) -> bool:
    """Whether Lightning will put the run on a CUDA device for this ``trainer.accelerator``."""
    return str(accelerator or "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU has native bf16 instructions, and which feature says so (or their absence)."""
    info = cpu_info()
    found = [name for name in CPU_BF16_FEATURES if info["features"].get(name)]
    if found:
        return True, f"CPU {info['model']!r} has {' and '.join(found)}"
    return False, f"CPU {info['model']!r} has no native bf16 ({' / '.join(CPU_BF16_FEATURES)} absent)"


def cuda_native_bf16() -> tuple[bool, str]:
    name = torch.cuda.get_device_name(0)
    if torch.cuda.is_bf16_supported():
        return True, f"CUDA device {name!r} supports bf16"
    return False, f"CUDA device {name!r} does not support bf16"


def resolve_precision(requested: Any, accelerator: str | None = "auto") -> PrecisionChoice:
    """``auto`` -> ``bf16-mixed`` where bf16 is native, else ``32-true``; any other value is checked and kept.

    Raises :class:`ConfigError` naming ``trainer.precision`` for a value Lightning does not know.
    """
    text = str(requested)
    if text != AUTO and text not in LIGHTNING_PRECISIONS:
        raise ConfigError(f"trainer.precision={text!r} is not allowed: must be auto or one of "
                          f"{', '.join(LIGHTNING_PRECISIONS)}")
    on_cuda = uses_cuda(accelerator)
    native, why = cuda_native_bf16() if on_cuda else cpu_native_bf16()
    if text == AUTO:
        return PrecisionChoice(text, BF16 if native else FP32, f"auto: {why}")
    warning = None
    if text.startswith("bf16") and not native and not on_cuda:
        warning = (f"trainer.precision={text} on a CPU without native bf16 is emulated: {CPU_BF16_SLOWDOWN}; "
                   f"use trainer.precision=auto or {FP32}")
    return PrecisionChoice(text, text, f"set by trainer.precision ({why})", warning)
