"""Lightning loop vs a plain PyTorch loop for ProtoNet training on Omniglot, in one process.

Both loops train the same Conv4 ProtoNet (channels-last) on the same episodes from the same
data module; the plain loop is the floor (DataLoader -> forward -> backward -> Adam step, nothing
else). Rounds alternate between the two so that machine noise hits both alike; the table reports
the median episodes/s of each and their ratio.

    python benchmarks/meta/protonet_loop_speed.py --way 60 --shot 5 --steps 40 --rounds 3
    python benchmarks/meta/protonet_loop_speed.py --precision bf16-mixed   # both loops under bf16 autocast
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F

from metalab.callbacks import TrainThroughput
from metalab.data.fewshot import FewShotDataModule
from metalab.data.omniglot import load_omniglot_splits
from metalab.learners.meta.protonet import ProtoNet
from metalab.models.conv4 import Conv4
from metalab.report.records import append_record


def make_learner() -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(Conv4(), optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))


def plain_loop(dm: FewShotDataModule, steps: int, precision: str) -> float:
    """Episodes/s of the bare loop (first 5 steps are warm-up)."""
    learner = make_learner()
    learner.backbone.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    start = None
    for i, batch in enumerate(loader):
        if i == 5:
            start = time.perf_counter()
        if i == steps + 5:
            break
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = learner.query_logits(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["query_labels"].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def lightning_loop(dm: FewShotDataModule, steps: int, precision: str) -> float:
    """Episodes/s of Trainer.fit with the run's default callbacks' throughput clock (5 warm-up steps)."""
    meter = TrainThroughput(warmup_steps=5)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps + 5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[meter],
        deterministic=torch.are_deterministic_algorithms_enabled(),
        inference_mode=False,
        precision=precision,
    )
    trainer.fit(make_learner(), datamodule=dm)
    return meter.episodes_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--way", type=int, default=60)
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="both loops without torch.use_deterministic_algorithms (runs use it by default)",
    )
    args = parser.parse_args()
    torch.use_deterministic_algorithms(not args.nondeterministic)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = {"way": args.way, "shot": args.shot, "query": args.query}
    dm = FewShotDataModule(
        pools=load_omniglot_splits, train=spec, val=spec, test=["5w5s"], train_episodes=args.steps + 10
    )
    dm.setup("fit")
    plain, lightning = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(dm, args.steps, args.precision))
        lightning.append(lightning_loop(dm, args.steps, args.precision))
    p, lit = statistics.median(plain), statistics.median(lightning)
    print(
        f"\nProtoNet {args.way}-way {args.shot}-shot {args.query}-query, Conv4 channels-last, {args.precision}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} steps"
    )
    print("| loop | episodes/s | relative |\n|---|---|---|")
    print(f"| plain PyTorch | {p:.2f} | 1.00 |")
    print(f"| metalab (Lightning) | {lit:.2f} | {lit / p:.3f} |")
    append_record(
        "benchmarks/meta/records/protonet_loop_speed.jsonl",
        {"plain_episodes_per_s": p, "lightning_episodes_per_s": lit, "relative": lit / p},
        settings={
            "way": args.way,
            "shot": args.shot,
            "query": args.query,
            "steps": args.steps,
            "rounds": args.rounds,
            "precision": args.precision,
        },
    )


if __name__ == "__main__":
    main()
