"""``trainer.precision: auto``: bf16 autocast only where it is measured faster for this run on this machine.

bf16 autocast can pay off only on hardware with bf16 arithmetic: a CUDA device that supports it, or a CPU
with AVX-512 BF16 or AMX. Elsewhere torch emulates bf16 and the same run is far slower (ProtoNet Conv4
on Omniglot, one core of an AMD EPYC Zen 3 without AVX-512: 0.22 episodes/s under bf16-mixed against
2.27 under 32-true, issue 23), so ``auto`` is fp32 there. Native bf16 is not enough either: on a CPU with
AVX-512 BF16 the Conv4 ProtoNet trained 1.6x faster in bf16, the Permuted MNIST MLP 1.8x slower (issue 31).
So on such a CPU ``auto`` times a few training steps of the run's own learner and data in both settings
(:func:`measure_precision`, on copies, the random state restored) and keeps the faster; the answer is
cached per CPU, torch version, learner, model and batch shapes, and recorded in ``metrics.json``.
Learners whose results must not depend on the CPU (evolution strategies) declare
``fixed_precision = "32-true"`` and ``auto`` gives them that.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalab.environment import cpu_info
from metalab.errors import ConfigError

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"
# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT_STR) and the short aliases it accepts.
LIGHTNING_PRECISIONS = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 instructions
CPU_BF16_SLOWDOWN = (
    "measured ~10x slower than 32-true on such a CPU (ProtoNet Conv4 on Omniglot, one core of "
    "an AMD EPYC Zen 3 without AVX-512: 0.22 episodes/s bf16-mixed vs 2.27 episodes/s 32-true)"
)


@dataclass(frozen=True)
class PrecisionChoice:
    """The Lightning precision a run uses, why, and a warning when a forced choice will be slow."""

    requested: str
    precision: str
    reason: str
    warning: str | None = None
    needs_measurement: bool = False  # auto on a CPU with native bf16: decided by measure_precision
    measurement: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        record = {"requested": self.requested, "used": self.precision, "reason": self.reason, "warning": self.warning}
        return {**record, "measurement": self.measurement} if self.measurement else record


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
        raise ConfigError(
            f"trainer.precision={text!r} is not allowed: must be auto or one of {', '.join(LIGHTNING_PRECISIONS)}"
        )
    on_cuda = uses_cuda(accelerator)
    native, why = cuda_native_bf16() if on_cuda else cpu_native_bf16()
    if text == AUTO and on_cuda:
        return PrecisionChoice(text, BF16 if native else FP32, f"auto: {why}")
    if text == AUTO:  # on a CPU: fp32 unless bf16 is native and measured faster for this run
        return PrecisionChoice(text, FP32, f"auto: {why}", needs_measurement=native)
    warning = None
    if text.startswith("bf16") and not native and not on_cuda:
        warning = (
            f"trainer.precision={text} on a CPU without native bf16 is emulated: {CPU_BF16_SLOWDOWN}; "
            f"use trainer.precision=auto or {FP32}"
        )
    return PrecisionChoice(text, text, f"set by trainer.precision ({why})", warning)


def fixed_precision(choice: PrecisionChoice, learner: Any) -> PrecisionChoice:
    """``auto`` for a learner that declares ``fixed_precision``: that precision, whatever the machine."""
    fixed = getattr(learner, "fixed_precision", None)
    if choice.requested != AUTO or not fixed:
        return choice
    return PrecisionChoice(
        AUTO,
        fixed,
        f"auto: {type(learner).__name__} computes in {fixed} on every machine (its results must not depend on the CPU)",
    )


def measure_precision(
    choice: PrecisionChoice, learner: Any, datamodule: Any, steps: int = 4, warmup: int = 2, cache: Path | None = None
) -> PrecisionChoice:
    """Settle an ``auto`` choice that needs it: median CPU seconds per training step of copies of ``learner``
    and ``datamodule`` in fp32 and in bf16-mixed (alternating, two rounds each), the faster kept; cached.

    The run's own objects and the random state are left exactly as they were, so a cached and a measured
    choice give the same run."""
    choice = fixed_precision(choice, learner)
    if not choice.needs_measurement:
        return choice
    shapes = _batch_shapes(datamodule)
    key = _cache_key(learner, shapes)
    path = cache or _cache_file()
    cached = _read_cache(path).get(key)
    if cached is None:
        state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        try:
            seconds: dict[str, list[float]] = {FP32: [], BF16: []}
            for _ in range(2):
                for setting in (FP32, BF16):
                    seconds[setting].append(seconds_per_step(learner, datamodule, setting, steps, warmup))
        finally:
            torch.set_rng_state(state[0])
            np.random.set_state(state[1])
            random.setstate(state[2])
        cached = {setting: statistics.median(values) for setting, values in seconds.items()}
        _write_cache(path, key, cached)
        source = f"measured over {steps} steps x 2 rounds"
    else:
        source = "measured earlier on this CPU for this learner, model and batch shapes (cache)"
    faster = BF16 if cached[BF16] < cached[FP32] else FP32
    ratio = cached[FP32] / cached[BF16]
    reason = (
        f"{choice.reason}; {source}: fp32 {cached[FP32]:.3g} s/step, bf16-mixed {cached[BF16]:.3g} s/step "
        f"(bf16 {ratio:.2f}x the speed of fp32) -> {faster}"
    )
    return replace(
        choice,
        precision=faster,
        reason=reason,
        needs_measurement=False,
        measurement={
            "fp32_s_per_step": cached[FP32],
            "bf16_s_per_step": cached[BF16],
            "bf16_speedup": ratio,
            "cached": source.endswith("(cache)"),
            "key": key,
        },
    )


class _StepClock:
    """CPU seconds of each training step after ``warmup`` (Lightning's public batch hooks)."""

    def __init__(self, warmup: int) -> None:
        import lightning as L

        outer = self

        class Clock(L.Callback):
            def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
                outer.started = time.process_time()

            def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
                if trainer.global_step > warmup:
                    outer.seconds.append(time.process_time() - outer.started)

        self.seconds: list[float] = []
        self.started = 0.0
        self.callback = Clock()


def seconds_per_step(learner: Any, datamodule: Any, setting: str, steps: int, warmup: int) -> float:
    """Median CPU seconds per training step of copies of ``learner`` and ``datamodule`` under Lightning
    precision ``setting`` (``steps`` clocked after ``warmup``); the originals are not touched."""
    import logging

    import lightning as L

    clock = _StepClock(warmup)
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # a task stream decides some Trainer arguments (the continual learner refuses a Trainer without them)
        decided = getattr(datamodule, "trainer_arguments", None)
        trainer = L.Trainer(
            **(decided() if callable(decided) else {}),
            accelerator="cpu",
            devices=1,
            max_steps=steps + warmup,
            precision=setting,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[clock.callback],
            inference_mode=False,
        )
        trainer.fit(copy.deepcopy(learner), datamodule=copy.deepcopy(datamodule))
    finally:
        quiet.setLevel(level)
    return statistics.median(clock.seconds) if clock.seconds else float("inf")


def _batch_shapes(datamodule: Any) -> str:
    """The shapes of one training batch of a copy of ``datamodule`` (what the speed of a step depends on)."""
    probe = copy.deepcopy(datamodule)
    probe.setup("fit")
    batch = next(iter(probe.train_dataloader()))

    def shapes(node: Any) -> Any:
        if torch.is_tensor(node):
            return [list(node.shape), str(node.dtype)]
        if isinstance(node, dict):
            return {str(k): shapes(v) for k, v in sorted(node.items())}
        if isinstance(node, (list, tuple)):
            return [shapes(v) for v in node]
        return type(node).__name__

    return json.dumps(shapes(batch), sort_keys=True)


def _cache_key(learner: Any, shapes: str) -> str:
    info = cpu_info()
    model = getattr(learner, "backbone", None) or learner
    parts = [info["model"], torch.__version__, torch.get_num_threads(), type(learner).__qualname__, repr(model), shapes]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _cache_file() -> Path:
    base = os.environ.get("METALAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalab"
    )
    return Path(base) / "precision.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, value: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache(path)
        entries[key] = value
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        temporary.replace(path)
    except OSError:
        pass  # a read-only home: measure again next time
