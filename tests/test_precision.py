"""``trainer.precision: auto`` follows the hardware: the CPU / CUDA feature probes are mocked here."""

from __future__ import annotations

import pytest
import torch

from metalab import environment, precision
from metalab.errors import ConfigError
from metalab.precision import resolve_precision

# A /proc/cpuinfo excerpt: the flags line decides, so two CPUs differ only there.
ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = ("model name\t: Intel Xeon Platinum 8481C\n"
                   "flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n")
ZEN4 = "model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n"


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on the CPU whose /proc/cpuinfo text is given, with no CUDA device."""
    def use(cpuinfo: str) -> None:
        monkeypatch.setattr(precision, "cpu_info", lambda: environment.cpu_info(cpuinfo))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return use


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu):
    cpu(ZEN3)
    choice = resolve_precision("auto")
    assert choice.precision == "32-true" and "no native bf16" in choice.reason and choice.warning is None


@pytest.mark.parametrize("cpuinfo, feature", [(SAPPHIRE_RAPIDS, "avx512_bf16 and amx_bf16"), (ZEN4, "avx512_bf16")])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(cpu, cpuinfo, feature):
    cpu(cpuinfo)
    choice = resolve_precision("auto", accelerator="cpu")
    assert choice.precision == "bf16-mixed" and feature in choice.reason


def test_forced_bf16_without_native_support_warns_with_the_measured_slowdown(cpu):
    cpu(ZEN3)
    choice = resolve_precision("bf16-mixed")
    assert choice.precision == "bf16-mixed"  # the user's choice is kept, but not silently
    assert "0.22" in choice.warning and "2.27" in choice.warning and "10x" in choice.warning
    cpu(ZEN4)
    assert resolve_precision("bf16-mixed").warning is None
    cpu(ZEN3)
    assert resolve_precision("32-true").warning is None


@pytest.mark.parametrize("supported, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cuda_follows_the_device(monkeypatch, cpu, supported, expected):
    cpu(SAPPHIRE_RAPIDS if not supported else ZEN3)  # the CPU must not matter once the run is on CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    assert resolve_precision("auto", accelerator="gpu").precision == expected
    assert "Fake GPU" in resolve_precision("auto").reason
    # a run told to stay on the CPU is judged by the CPU, even with a GPU present
    assert resolve_precision("auto", accelerator="cpu").precision == ("32-true" if supported else "bf16-mixed")


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError, match=r"trainer.precision='fp7' is not allowed: must be auto or one of"):
        resolve_precision("fp7")
