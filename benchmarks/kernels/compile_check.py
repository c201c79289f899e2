"""Compile every Triton kernel variant for real NVIDIA GPUs, without a GPU, and report resources.

Why: the CPU interpreter checks the kernels' arithmetic but not whether they compile for a GPU
(``tl.dot`` shape/dtype rules, type promotion in loops, constexpr branches), nor whether the
ANIL kernel's "everything in registers" tiles spill. Triton ships ``ptxas``, so each kernel is
compiled ahead of time to a cubin for the chosen architectures (default sm_80 and sm_90) and
``cuobjdump -res-usage`` reports registers per thread and local-memory (spill) bytes.

    python benchmarks/kernels/compile_check.py            # all variants, sm_80 + sm_90
    python benchmarks/kernels/compile_check.py --arch 80  # one architecture

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); the script
re-executes itself without it if needed. Exit status 1 if any variant fails to compile.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _variants():
    """(label, kernel, signature, constexprs) for every combination the launchers can produce."""
    import triton.language as tl

    from metalab.kernels.anil import _anil_kernel, _tiles
    from metalab.kernels.ewc import _ewc_fwd_kernel
    from metalab.kernels.fisher import _linear_fisher_kernel, _square_accumulate_kernel
    from metalab.kernels.inner_step import _inner_update_bwd_kernel, _inner_update_fwd_kernel

    acc = {"fp32": tl.float32, "bf16": tl.float32, "fp16": tl.float32, "fp64": tl.float64}
    out = []
    for dt in ("fp32", "bf16", "fp64"):
        p = f"*{dt}"
        for per_task in (False, True):
            for per_param in (False, True):
                out.append(
                    (
                        f"inner_update fwd {dt} theta_per_task={per_task} lr_per_param={per_param}",
                        _inner_update_fwd_kernel,
                        {"theta_ptr": p, "grads_ptr": p, "lr_ptr": p, "out_ptr": p, "P": "i32", "n_blocks": "i32"},
                        {"THETA_PER_TASK": per_task, "LR_PER_PARAM": per_param, "ACC": acc[dt], "BLOCK": 1024},
                    )
                )
        dlr = "*fp64" if dt == "fp64" else "*fp32"
        for per_param in (False, True):
            for flags in ((True, True, True), (False, False, True), (False, True, False)):
                out.append(
                    (
                        f"inner_update bwd {dt} lr_per_param={per_param} need(sum,dg,dlr)={flags}",
                        _inner_update_bwd_kernel,
                        {
                            "go_ptr": p,
                            "grads_ptr": p,
                            "lr_ptr": p,
                            "dsum_ptr": p,
                            "dgrads_ptr": p,
                            "dlr_ptr": dlr,
                            "T": "i32",
                            "P": "i32",
                        },
                        {
                            "LR_PER_PARAM": per_param,
                            "NEED_SUM": flags[0],
                            "NEED_DGRADS": flags[1],
                            "NEED_DLR": flags[2],
                            "ACC": acc[dt],
                            "BLOCK": 1024,
                        },
                    )
                )
        a = "*fp64" if dt == "fp64" else "*fp32"
        for has_f in (False, True):
            out.append(
                (
                    f"square_accumulate {dt} grads has_fisher={has_f}",
                    _square_accumulate_kernel,
                    {"f_ptr": a, "g_ptr": p, "coef_ptr": a, "out_ptr": a, "N": "i32", "P": "i32"},
                    {"HAS_F": has_f, "ACC": acc[dt], "BLOCK_N": 16, "BLOCK_P": 256},
                )
            )
        for blocks, warps in (((64, 64, 16), 8), ((16, 16, 16), 4)):  # the launcher's choices
            out.append(
                (
                    f"linear_fisher {dt} blocks={blocks} warps={warps}",
                    _linear_fisher_kernel,
                    {"a_ptr": p, "d_ptr": p, "out_ptr": a, "N": "i32", "Din": "i32", "Dout": "i32"},
                    {
                        "ACC": acc[dt],
                        "BLOCK_M": blocks[0],
                        "BLOCK_N": blocks[1],
                        "BLOCK_K": blocks[2],
                        "_num_warps": warps,
                    },
                )
            )
        for need in (False, True):
            out.append(
                (
                    f"ewc_penalty {dt} need_grad={need}",
                    _ewc_fwd_kernel,
                    {"f_ptr": a, "theta_ptr": p, "star_ptr": p, "partial_ptr": a, "grad_ptr": p, "P": "i32"},
                    {"NEED_GRAD": need, "ACC": acc[dt], "BLOCK": 1024},
                )
            )
        head = "*fp64" if dt == "fp64" else "*fp32"
        # (N, D, W) -> tiles as the launcher picks them: 5-way 5-shot and 20-way 5-shot on 64-d
        # features, and the largest heads it accepts (MAX_HEAD_TILE / MAX_X_TILE).
        for n, d, w in ((25, 64, 5), (100, 64, 20), (500, 128, 16), (16, 64, 32), (16, 128, 16)):
            bn, bd, bw = _tiles(n, d, w)
            out.append(
                (
                    f"anil_head_adapt {dt} N,D,W={n},{d},{w} tiles={bn},{bd},{bw} resident={n <= bn}",
                    _anil_kernel,
                    {
                        "x_ptr": p,
                        "y_ptr": "*i64",
                        "w0_ptr": head,
                        "b0_ptr": head,
                        "coef_ptr": head,
                        "w_out_ptr": head,
                        "b_out_ptr": head,
                        "N": "i32",
                        "D": "i32",
                        "W": "i32",
                        "steps": "i32",
                    },
                    {
                        "ACC": acc[dt],
                        "X_RESIDENT": n <= bn,
                        "BLOCK_N": bn,
                        "BLOCK_D": bd,
                        "BLOCK_W": bw,
                        "_num_warps": 8,
                    },
                )
            )
    return out


def _resources(cubin: bytes, cuobjdump: Path) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True)
    m = re.search(r"REG:(\d+).*?STACK:(\d+).*?LOCAL:(\d+)", res.stdout)
    return f"regs={m.group(1)} stack={m.group(2)}B local={m.group(3)}B" if m else "(no resource info)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="SM version(s), default 80 and 90")
    parser.add_argument("--filter", default="", help="only variants whose label contains this")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.run([sys.executable, *sys.argv], env=env).returncode

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    failures = 0
    for arch in args.arch or [80, 90]:
        target = GPUTarget("cuda", arch, 32)
        for label, kernel, sig, constexprs in _variants():
            if args.filter not in label:
                continue
            constexprs = dict(constexprs)
            num_warps = constexprs.pop("_num_warps", 4)
            full_sig = dict(sig, **{k: "constexpr" for k in constexprs})
            t0 = time.perf_counter()
            try:
                compiled = triton.compile(
                    ASTSource(kernel, full_sig, constexprs=constexprs), target=target, options={"num_warps": num_warps}
                )
                info = _resources(compiled.asm["cubin"], cuobjdump) if cuobjdump.exists() else ""
                print(f"ok    sm_{arch} {label}: {info} ({time.perf_counter() - t0:.1f}s)")
            except Exception as exc:  # noqa: BLE001 - report every failing variant
                failures += 1
                msg = str(exc).strip().splitlines()
                print(f"FAIL  sm_{arch} {label}: {type(exc).__name__}: {msg[-1] if msg else ''}")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
