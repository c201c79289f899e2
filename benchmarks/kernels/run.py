"""Benchmark the kernels against their torch references (and torch.compile), and the linear-layer
Fisher identity against materialising per-sample gradients.

    python benchmarks/kernels/run.py                 # full sizes
    python benchmarks/kernels/run.py --quick         # tiny sizes (smoke test, seconds)
    python benchmarks/kernels/run.py --json out.json # also save the figures

On a CUDA device every op is timed three ways (Triton kernel, torch reference, torch.compile of the
reference) with ``triton.testing.do_bench``, and the achieved memory bandwidth (elementwise and
reduction ops) or FLOP rate (matmul-like ops) is reported against the device's peak. Without a GPU
the torch references are timed on the CPU for information and the script says that the GPU
figures need a GPU (Triton's CPU interpreter is a correctness tool, ~10^4x slower: timing it would
be meaningless).

Both modes then time the CPU comparison the Fisher identity is for: for one ``Din x Dout`` linear
layer and N samples, ``sum_n g_n^2`` from the identity ``(delta^2)^T (a^2)`` (torch reference)
versus materialising the N per-sample gradients (from the same activations and output gradients;
with ``torch.func.vmap(grad)``; with a loop of N backward passes). Every method's result is
checked against the identity's, so the benchmark cannot report a fast wrong answer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from metalab import kernels  # noqa: E402
from metalab.kernels.anil import anil_head_adapt_reference  # noqa: E402
from metalab.kernels.ewc import ewc_penalty_reference  # noqa: E402
from metalab.kernels.fisher import (  # noqa: E402
    fisher_accumulate_reference,
    linear_fisher_bias_reference,
    linear_fisher_reference,
)
from metalab.kernels.inner_step import inner_update_reference  # noqa: E402

# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def cpu_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_time(fn: Callable[[], object]) -> float:
    """Mean time in seconds on the current CUDA device (Triton's do_bench: flushes L2, syncs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100) * 1e-3


def gpu_peaks() -> dict[str, float | None]:
    """Peak DRAM bandwidth (GB/s) and fp32 SIMD TFLOP/s of the current device, if derivable."""
    peaks: dict[str, float | None] = {"dram_gbps": None, "fp32_tflops": None}
    try:
        import triton.testing
        from triton.runtime import driver

        peaks["dram_gbps"] = triton.testing.get_dram_gbps()
        props = driver.active.utils.get_device_properties(torch.cuda.current_device())
        clock_khz = props.get("sm_clock_rate") or props.get("max_clock_rate")
        if clock_khz:
            peaks["fp32_tflops"] = triton.testing.get_max_simd_tflops(torch.float32, clock_khz)
    except Exception as exc:  # noqa: BLE001 - peaks are informative only
        print(f"(device peaks unavailable: {exc})")
    return peaks


# ---------------------------------------------------------------------------------------------
# the ops and their sizes
# ---------------------------------------------------------------------------------------------


def op_cases(device: str, quick: bool) -> list[dict]:
    """Each case: name, kernel thunk, reference callable + args, bytes moved, flops."""
    s = 1 if not quick else 0
    T, P = (32, 1 << 20) if s else (4, 4096)
    N, PF = (64, 1 << 20) if s else (8, 4096)
    NL, DIN, DOUT = (4096, 1024, 1024) if s else (64, 64, 64)
    PE = (1 << 24) if s else 8192
    TA, NA, DA, WA, KA = (64, 100, 64, 20, 10) if s else (4, 25, 64, 5, 3)
    f32 = dict(device=device, dtype=torch.float32)
    el = 4

    theta, grads, lr = torch.randn(P, **f32), torch.randn(T, P, **f32), torch.rand(P, **f32)
    go = torch.randn(T, P, **f32)
    theta_g, grads_g, lr_g = (t.clone().requires_grad_() for t in (theta, grads, lr))
    out_ref = inner_update_reference(theta_g, grads_g, lr_g)
    out_ker = None
    if device == "cuda" or kernels.interpreter_active():  # (interpreted: the smoke test)
        with kernels.backend("triton"):
            out_ker = kernels.inner_update(theta_g, grads_g, lr_g)

    fisher, psg = torch.rand(PF, **f32), torch.randn(N, PF, **f32)
    a, delta = torch.randn(NL, DIN, **f32), torch.randn(NL, DOUT, **f32)
    ef, et, es = torch.rand(PE, **f32), torch.randn(PE, **f32), torch.randn(PE, **f32)
    et_g = et.clone().requires_grad_()
    xa = torch.randn(TA, NA, DA, **f32)
    ya = torch.randint(0, WA, (TA, NA), device=device)
    wa, ba = 0.1 * torch.randn(DA, WA, **f32), torch.zeros(WA, **f32)

    def ewc_value_and_grad_ref(f, t, s_):
        t = t.detach().requires_grad_()
        v = ewc_penalty_reference(f, t, s_)
        return torch.autograd.grad(v, t)

    def ewc_value_and_grad_ker():
        with kernels.backend("triton"):
            v = kernels.ewc_penalty(ef, et_g, es)
        return torch.autograd.grad(v, et_g)

    def triton(fn, *args):
        def run():
            with kernels.backend("triton"):
                return fn(*args)

        return run

    return [
        dict(
            name=f"inner_update fwd T={T} P={P}",
            kernel=triton(kernels.inner_update, theta, grads, lr),
            ref=inner_update_reference,
            args=(theta, grads, lr),
            bytes=el * (2 * T * P + 2 * P),
            flops=None,
        ),
        dict(
            name=f"inner_update bwd T={T} P={P}",
            kernel=(lambda: torch.autograd.grad(out_ker, (theta_g, grads_g, lr_g), go, retain_graph=True))
            if out_ker is not None
            else None,
            ref=lambda: torch.autograd.grad(out_ref, (theta_g, grads_g, lr_g), go, retain_graph=True),
            args=(),
            bytes=el * (3 * T * P + 3 * P),
            flops=None,
            no_compile=True,
        ),
        dict(
            name=f"fisher_accumulate N={N} P={PF}",
            kernel=triton(kernels.fisher_accumulate, fisher, psg, 0.9),
            ref=fisher_accumulate_reference,
            args=(fisher, psg, 0.9),
            bytes=el * (N * PF + 2 * PF),
            flops=None,
        ),
        dict(
            name=f"linear_fisher N={NL} {DIN}x{DOUT}",
            kernel=triton(kernels.linear_fisher, a, delta),
            ref=linear_fisher_reference,
            args=(a, delta),
            bytes=el * (NL * (DIN + DOUT) + DIN * DOUT),
            flops=2 * NL * DIN * DOUT,
        ),
        dict(
            name=f"ewc_penalty+grad P={PE}",
            kernel=ewc_value_and_grad_ker,
            ref=ewc_value_and_grad_ref,
            args=(ef, et, es),
            bytes=el * 4 * PE,
            flops=None,
        ),
        dict(
            name=f"anil_head_adapt T={TA} N={NA} D={DA} W={WA} K={KA}",
            kernel=triton(kernels.anil_head_adapt, xa, ya, wa, ba, 0.5, KA),
            ref=anil_head_adapt_reference,
            args=(xa, ya, wa, ba, 0.5, KA),
            bytes=el * (TA * NA * DA + TA * DA * WA) + 8 * TA * NA,
            flops=4 * TA * NA * DA * WA * KA,
        ),
    ]


def bench_gpu(quick: bool, device: str = "cuda") -> list[dict]:
    """The GPU table. ``device`` is "cuda" except in the smoke test (interpreted, fake timers)."""
    peaks = gpu_peaks()
    print(
        f"device: {torch.cuda.get_device_name()}  peak DRAM {peaks['dram_gbps']} GB/s, "
        f"peak fp32 {peaks['fp32_tflops']} TFLOP/s"
    )
    rows = []
    for case in op_cases(device, quick):
        ref = case["ref"]
        args = case["args"]
        row = {"op": case["name"]}
        variants = {"triton": case["kernel"], "torch": lambda ref=ref, args=args: ref(*args)}
        if not case.get("no_compile"):
            compiled = torch.compile(ref)
            variants["torch.compile"] = lambda compiled=compiled, args=args: compiled(*args)
        for label, fn in variants.items():
            if fn is None:
                continue
            try:
                t = gpu_time(fn)
            except Exception as exc:  # noqa: BLE001 - report and continue with the other rows
                row[label] = f"error: {type(exc).__name__}: {exc}"[:120]
                continue
            cell = {"ms": t * 1e3}
            if case["flops"]:
                cell["tflops"] = case["flops"] / t / 1e12
                if peaks["fp32_tflops"]:
                    cell["pct_peak"] = 100 * cell["tflops"] / peaks["fp32_tflops"]
            else:
                cell["gbps"] = case["bytes"] / t / 1e9
                if peaks["dram_gbps"]:
                    cell["pct_peak"] = 100 * cell["gbps"] / peaks["dram_gbps"]
            row[label] = cell
        rows.append(row)
    print("\n| op | variant | time (ms) | achieved | % of peak |\n|---|---|---:|---:|---:|")
    for row in rows:
        for label in ("triton", "torch", "torch.compile"):
            cell = row.get(label)
            if cell is None:
                continue
            if isinstance(cell, str):
                print(f"| {row['op']} | {label} | {cell} | | |")
                continue
            rate = f"{cell['tflops']:.2f} TFLOP/s" if "tflops" in cell else f"{cell['gbps']:.0f} GB/s"
            pct = f"{cell['pct_peak']:.0f}%" if "pct_peak" in cell else "n/a"
            print(f"| {row['op']} | {label} | {cell['ms']:.3f} | {rate} | {pct} |")
    return rows


def bench_cpu_references(quick: bool) -> list[dict]:
    print(
        "No CUDA device: GPU figures (Triton vs torch vs torch.compile, % of peak bandwidth/FLOPs) "
        "need a GPU. Timing the torch references on the CPU for information only.\n"
    )
    rows = []
    print("| op (torch reference, CPU) | time (ms) | achieved |\n|---|---:|---:|")
    for case in op_cases("cpu", quick):
        ref, args = case["ref"], case["args"]
        t = cpu_time(lambda ref=ref, args=args: ref(*args), repeats=3)
        rate = f"{case['flops'] / t / 1e9:.1f} GFLOP/s" if case["flops"] else f"{case['bytes'] / t / 1e9:.1f} GB/s"
        print(f"| {case['name']} | {t * 1e3:.2f} | {rate} |")
        rows.append({"op": case["name"], "torch_cpu_ms": t * 1e3, "achieved": rate})
    return rows


# ---------------------------------------------------------------------------------------------
# Fisher identity vs per-sample gradients (CPU)
# ---------------------------------------------------------------------------------------------


def bench_fisher_identity(n: int, din: int, dout: int, chunk: int, repeats: int) -> list[dict]:
    """Weight+bias ``sum_n g_n^2`` of one Linear(din, dout) under cross-entropy over dout classes."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(din, dout)
    x = torch.randn(n, din)
    y = torch.randint(0, dout, (n,))
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def output_grads() -> torch.Tensor:
        out = layer(x)
        return torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), out)[0]  # [N, Dout]

    delta = output_grads()

    def identity_from_delta():
        return linear_fisher_reference(x, delta), linear_fisher_bias_reference(delta)

    def identity_pipeline():  # forward + backward to the layer output + identity
        d = output_grads()
        return linear_fisher_reference(x, d), linear_fisher_bias_reference(d)

    def materialise_from_delta():  # the same inputs, but per-sample outer products written out
        w = torch.zeros(dout, din)
        for i in range(0, n, chunk):
            w += torch.einsum("no,ni->noi", delta[i : i + chunk], x[i : i + chunk]).square().sum(0)
        return w, delta.square().sum(0)

    def loss_one(p, xi, yi):
        return F.cross_entropy(torch.func.functional_call(layer, p, (xi[None],)), yi[None])

    per_sample_grad = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk)

    def vmap_grad():
        g = per_sample_grad(params, x, y)  # {"weight": [N, Dout, Din], "bias": [N, Dout]}
        return g["weight"].square().sum(0), g["bias"].square().sum(0)

    def loop_backward():
        w, b = torch.zeros(dout, din), torch.zeros(dout)
        for i in range(n):
            gw, gb = torch.autograd.grad(F.cross_entropy(layer(x[i : i + 1]), y[i : i + 1]), (layer.weight, layer.bias))
            w += gw.square()
            b += gb.square()
        return w, b

    methods = [
        ("identity (delta^2)^T (a^2), torch reference", "given a, delta", identity_from_delta, repeats),
        ("identity incl. forward+backward", "from x, y", identity_pipeline, repeats),
        (
            f"materialise delta_n a_n^T (chunks of {chunk})",
            "given a, delta",
            materialise_from_delta,
            max(1, repeats // 2),
        ),
        (f"torch.func vmap(grad) (chunk_size={chunk})", "from x, y", vmap_grad, max(1, repeats // 2)),
        (f"loop of {n} backward passes", "from x, y", loop_backward, 1),
    ]
    ref_w, ref_b = identity_from_delta()
    rows = []
    for name, inputs, fn, reps in methods:
        w, b = fn()
        err = max(
            ((w - ref_w).abs().max() / ref_w.abs().max()).item(), ((b - ref_b).abs().max() / ref_b.abs().max()).item()
        )
        if err > 1e-4:
            raise AssertionError(f"{name}: disagrees with the identity (relative error {err:.2e})")
        t = cpu_time(fn, repeats=reps, warmup=1 if reps > 1 else 0)
        rows.append({"method": name, "inputs": inputs, "seconds": t, "rel_err_vs_identity": err})
    base_given = rows[0]["seconds"]
    base_full = rows[1]["seconds"]
    print(
        f"\nFisher diagonal of Linear({din}, {dout}) over N={n} samples, CPU, "
        f"{torch.get_num_threads()} thread(s), median of repeats"
    )
    print("| method | inputs | time (ms) | ratio to identity (same inputs) | max rel. diff |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        base = base_given if row["inputs"] == "given a, delta" else base_full
        row["ratio"] = row["seconds"] / base
        print(
            f"| {row['method']} | {row['inputs']} | {row['seconds'] * 1e3:.1f} | {row['ratio']:.1f}x | "
            f"{row['rel_err_vs_identity']:.1e} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--fisher-samples", type=int, default=1000)
    parser.add_argument("--fisher-dim", type=int, default=512, help="Din = Dout of the linear layer")
    parser.add_argument("--chunk", type=int, default=100, help="samples per materialised chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("note: TRITON_INTERPRET=1 is set; GPU kernels would run interpreted")

    result: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        result["gpu"] = bench_gpu(args.quick)
    else:
        result["cpu_references"] = bench_cpu_references(args.quick)
    n, d = (args.fisher_samples, args.fisher_dim) if not args.quick else (50, 32)
    result["fisher_identity"] = bench_fisher_identity(n, d, d, min(args.chunk, n), args.repeats)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
    from metalab.report.records import append_record

    rows = [{"part": "fisher_identity", **row} for row in result["fisher_identity"]]
    rows += [{"part": "cpu_reference", **row} for row in result.get("cpu_references", [])]
    rows += [{"part": "gpu", **row} for row in result.get("gpu", [])] if isinstance(result.get("gpu"), list) else []
    append_record(
        "benchmarks/kernels/records/run.jsonl",
        rows,
        settings={"quick": args.quick, "fisher_samples": n, "fisher_dim": d, "repeats": args.repeats},
    )


if __name__ == "__main__":
    main()
