"""How far float32 meta-gradients are from float64 ones, for us and for learn2learn, on the real
benchmark setting (Conv4, one Omniglot meta-batch of 32 5-way 1-shot tasks with 15 queries/class).

Shows that the float32 differences in ``maml_vs_learn2learn.py`` come from the conditioning of the
problem (batch norm over 5 support images, inner lr 0.4, several steps), not from either code:
in float64 the two meta-gradients agree to ~1e-14.

    python benchmarks/meta/maml_gradient_precision.py
"""

from __future__ import annotations

import maml_vs_learn2learn as bench
import torch

CASES = [(True, 1), (False, 1), (True, 5), (False, 5)]


def meta_gradient(impl_cls, batch, dtype: torch.dtype, first_order: bool, steps: int) -> list[torch.Tensor]:
    model = bench.make_model("cpu").to(dtype)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    impl_cls(model, first_order, steps).loss(cast).backward()
    return [p.grad.double() for p in model.parameters()]


def relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    scale = max(y.abs().max().item() for y in b)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale


def main() -> None:
    batch = bench.episodes(1, "cpu")[0]
    print(
        "| order | inner steps | metalab64 vs learn2learn64 | learn2learn32 vs learn2learn64 "
        "| metalab32 vs learn2learn64 |"
    )
    print("|---|---|---|---|---|")
    rows = []
    for first_order, steps in CASES:
        l64 = meta_gradient(bench.Learn2Learn, batch, torch.float64, first_order, steps)
        o64 = meta_gradient(bench.Ours, batch, torch.float64, first_order, steps)
        l32 = meta_gradient(bench.Learn2Learn, batch, torch.float32, first_order, steps)
        o32 = meta_gradient(bench.Ours, batch, torch.float32, first_order, steps)
        print(
            f"| {'first' if first_order else 'second'} | {steps} | {relative(o64, l64):.1e} | "
            f"{relative(l32, l64):.1e} | {relative(o32, l64):.1e} |"
        )
        rows.append(
            {
                "order": "first" if first_order else "second",
                "inner_steps": steps,
                "metalab64_vs_learn2learn64": relative(o64, l64),
                "learn2learn32_vs_learn2learn64": relative(l32, l64),
                "metalab32_vs_learn2learn64": relative(o32, l64),
            }
        )
    from metalab.report.records import append_record

    append_record("benchmarks/meta/records/maml_gradient_precision.jsonl", rows)


if __name__ == "__main__":
    main()
