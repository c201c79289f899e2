"""What machine a figure was measured on: CPU model and the instruction sets that decide speed here.

Figures in this project are only comparable on the same CPU (bf16 autocast is 2x faster than fp32 on
a CPU with AVX-512 BF16 and 10x slower on one without), so every run record, benchmark record and
report carries :func:`environment_report`. ``metalab env`` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# /proc/cpuinfo flags that matter for the kernels torch picks on CPU.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
PACKAGES = ("torch", "lightning", "triton", "numpy", "hydra-core", "optuna")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model name and which of :data:`CPU_FEATURES` it has (from ``/proc/cpuinfo`` on Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "features": {name: name in flags for name in CPU_FEATURES},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_report() -> dict[str, Any]:
    """CPU, usable cores, torch threads, package versions and GPU (if any), as plain JSON values."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported()}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_info(),
        "usable_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "gpu": gpu,
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("env", help="print the machine facts every record carries (CPU, features, versions)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    features = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["cpu"]["features"].items())
    print(
        f"cpu: {report['cpu']['model']}\n  {features}\nusable cores: {report['usable_cores']}, "
        f"torch threads: {report['torch_threads']}\npython {report['python']}; "
        + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v)
        + f"\ngpu: {report['gpu'] or 'none'}"
    )
    return 0
