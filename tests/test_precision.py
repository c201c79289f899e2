"""``trainer.precision: auto`` follows the hardware: the CPU / CUDA feature probes are mocked here."""

from __future__ import annotations

import pytest
import torch

from metalab import environment, precision
from metalab.errors import ConfigError
from metalab.precision import resolve_precision

# A /proc/cpuinfo excerpt: the flags line decides, so two CPUs differ only there.
ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = (
    "model name\t: Intel Xeon Platinum 8481C\n"
    "flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n"
)
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
def test_auto_on_a_cpu_with_native_bf16_is_decided_by_measurement(cpu, cpuinfo, feature):
    cpu(cpuinfo)
    choice = resolve_precision("auto", accelerator="cpu")
    assert choice.needs_measurement and choice.precision == "32-true" and feature in choice.reason


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
    on_cpu = resolve_precision("auto", accelerator="cpu")  # fp32, measured against bf16 where the CPU has it
    assert on_cpu.precision == "32-true" and on_cpu.needs_measurement == (not supported)


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError, match=r"trainer.precision='fp7' is not allowed: must be auto or one of"):
        resolve_precision("fp7")


class _Learner:
    """Stands in for a learner in the cache key; the measurement itself is replaced by a clock of our own."""

    backbone = torch.nn.Linear(3, 2)


class _Data:
    def setup(self, stage):
        pass

    def train_dataloader(self):
        return [torch.zeros(4, 3)]


@pytest.mark.parametrize("fp32, bf16, expected", [(1.0, 0.6, "bf16-mixed"), (1.0, 1.8, "32-true")])
def test_auto_keeps_the_measured_faster_setting_records_the_ratio_and_caches_it(
    cpu, monkeypatch, tmp_path, fp32, bf16, expected
):
    cpu(ZEN4)
    timed = []
    monkeypatch.setattr(
        precision,
        "seconds_per_step",
        lambda learner, data, setting, steps, warmup: (
            timed.append(setting) or {"32-true": fp32, "bf16-mixed": bf16}[setting]
        ),
    )
    state = torch.get_rng_state()
    choice = precision.measure_precision(resolve_precision("auto", "cpu"), _Learner(), _Data(), cache=tmp_path / "c")
    assert choice.precision == expected and choice.measurement["bf16_speedup"] == pytest.approx(fp32 / bf16)
    assert sorted(timed) == ["32-true", "32-true", "bf16-mixed", "bf16-mixed"] and not choice.measurement["cached"]
    assert torch.equal(torch.get_rng_state(), state)  # the run's random state as it was
    again = precision.measure_precision(resolve_precision("auto", "cpu"), _Learner(), _Data(), cache=tmp_path / "c")
    assert again.precision == expected and again.measurement["cached"] and len(timed) == 4  # no second probe


def test_auto_is_fp32_for_learners_whose_results_must_not_depend_on_the_cpu(cpu, tmp_path):
    from metalab.learners.search import SearchRun

    cpu(ZEN4)
    learner = SearchRun.__new__(SearchRun)
    choice = precision.measure_precision(resolve_precision("auto", "cpu"), learner, _Data(), cache=tmp_path / "c")
    assert choice.precision == "32-true" and "must not depend on the CPU" in choice.reason


@pytest.mark.parametrize("cpuinfo", [ZEN3, ZEN4, SAPPHIRE_RAPIDS])
def test_every_study_computes_in_fp32_whatever_the_cpu(cpu, cpuinfo):
    """Published tables reproduce on any CPU: each planned study run is fp32 with and without native bf16."""
    from pathlib import Path

    from metalab.report.study import compose_run, load_study

    cpu(cpuinfo)
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "experiments").glob("*.yaml")):
        for budget in load_study(path).budgets:
            study = load_study(path, budget)
            for run in {(r.experiment, r.overrides): r for r in study.runs}.values():
                requested = compose_run(study, run).trainer.precision
                choice = resolve_precision(requested, "cpu")
                assert choice.precision == "32-true" and not choice.needs_measurement, (path.name, budget, run.label)
