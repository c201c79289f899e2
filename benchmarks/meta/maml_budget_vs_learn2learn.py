"""Test accuracy after the same CPU budget: our MAML engine against learn2learn's, on the same network.

Trains one side (``--side metalab`` or ``--side learn2learn``) on Omniglot (Vinyals train+val
characters with rotations) until the process has used ``--cpu-minutes`` of CPU time, then tests on
1000 5-way 1-shot episodes of the Vinyals test characters (3 first-order adaptation steps, 15
queries per class, the same episodes for both sides) and prints the mean accuracy with its 95% CI.

Both sides: learn2learn's ``OmniglotCNN`` layout (Finn et al. 2017; ours is ``model=conv4_strided``),
each side with its own default initialisation, meta-batch 32 tasks of 5-way 1-shot with 1 query per
class (as ``omniglot/fomaml_5w1s``), inner lr 0.4, 1 inner step, Adam 1e-3 annealed by a cosine over
the fraction of the CPU budget used (to 1e-5), first order unless ``--second-order``. Batch norm uses
each task's own batch statistics at test on both sides (transductive, as in Finn et al.'s code).
learn2learn adapts task after task and back-propagates the mean of the task losses once.

The budget is CPU time of the process (``time.process_time``), not wall time, so that the two sides
can be compared on a machine shared with other jobs; run both at once on the same core for the same
conditions. ``--deadline HH:MM`` (UTC) stops training early if the wall clock gets there first (the
learning rate is then annealed over the wall time instead); the record says how much CPU time was used::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/meta/maml_budget_vs_learn2learn.py \
        --side metalab --cpu-minutes 30
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/meta/maml_budget_vs_learn2learn.py \
        --side learn2learn --cpu-minutes 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from functools import partial

import torch
import torch.nn.functional as F

WAY, SHOT, TRAIN_QUERY, TASKS, INNER_LR, META_LR, MIN_LR = 5, 1, 1, 32, 0.4, 1e-3, 1e-5
TEST_EPISODES, TEST_QUERY, EVAL_STEPS = 1000, 15, 3


def datamodule(seed: int, test_episodes: int = TEST_EPISODES):
    from metalab.data.fewshot import FewShotDataModule
    from metalab.data.omniglot import load_omniglot_splits

    dm = FewShotDataModule(
        pools=partial(load_omniglot_splits, split="vinyals_trainval"),
        train={"way": WAY, "shot": SHOT, "query": TRAIN_QUERY},
        val={"way": WAY, "shot": SHOT, "query": TEST_QUERY},
        test=[f"{WAY}w{SHOT}s"],
        test_query=TEST_QUERY,
        train_episodes=50_000,
        test_episodes=test_episodes,
        tasks_per_batch=TASKS,
        eval_tasks_per_batch=50,
        seed=seed,
    )
    dm.setup("fit")
    return dm


class Ours:
    """The MAML learner ``train.py`` runs (grouped fast path), driven by a plain loop."""

    def __init__(self, first_order: bool):
        from metalab.learners.meta.maml import MAML
        from metalab.models.conv4 import Conv4

        model = Conv4(out_features=WAY, stride=2, pool=False, readout="mean")
        self.learner = MAML(
            model,
            optimizer=torch.optim.Adam,
            inner_steps=1,
            inner_lr=INNER_LR,
            eval_inner_steps=EVAL_STEPS,
            first_order=first_order,
            chunk_images=150,
            support_chunk_images=40,
        )
        self.learner.backbone.to(memory_format=torch.channels_last)
        self.parameters = list(self.learner.parameters())

    def loss(self, batch) -> torch.Tensor:
        self.learner.train()
        return self.learner.training_loss(batch)[0]

    def accuracies(self, batch) -> torch.Tensor:
        self.learner.eval()
        logits = self.learner.query_logits(batch)
        return (logits.argmax(-1) == batch["query_labels"]).float().mean(1)


class Learn2Learn:
    """learn2learn's MAML wrapper around its OmniglotCNN, as in its Omniglot example."""

    def __init__(self, first_order: bool):
        import learn2learn as l2l

        self.maml = l2l.algorithms.MAML(
            l2l.vision.models.OmniglotCNN(output_size=WAY), lr=INNER_LR, first_order=first_order
        )
        self.parameters = list(self.maml.parameters())

    def adapted(self, support, labels, steps):
        learner = self.maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(support), labels))
        return learner

    def loss(self, batch) -> torch.Tensor:
        losses = [
            F.cross_entropy(
                self.adapted(batch["support"][t], batch["support_labels"][t], 1)(batch["query"][t]),
                batch["query_labels"][t],
            )
            for t in range(batch["support"].shape[0])
        ]
        return torch.stack(losses).mean()

    def accuracies(self, batch) -> torch.Tensor:
        accs = []
        for t in range(batch["support"].shape[0]):
            learner = self.adapted(batch["support"][t], batch["support_labels"][t], EVAL_STEPS)
            with torch.no_grad():
                accs.append((learner(batch["query"][t]).argmax(-1) == batch["query_labels"][t]).float().mean())
        return torch.stack(accs)


def train(side, dm, cpu_budget_s: float, deadline: dt.datetime | None, log_every: int) -> dict:
    optimizer = torch.optim.Adam(side.parameters, lr=META_LR)
    start_cpu, start_wall, steps = time.process_time(), time.perf_counter(), 0
    wall_s = (deadline - dt.datetime.now(dt.UTC)).total_seconds() if deadline is not None else math.inf
    for batch in dm.train_dataloader():
        used = time.process_time() - start_cpu
        # cosine annealing over the budget (not a step count); over the wall time left when the deadline
        # would end the run first
        fraction = max(used / cpu_budget_s, (time.perf_counter() - start_wall) / wall_s)
        if fraction >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = MIN_LR + 0.5 * (META_LR - MIN_LR) * (1 + math.cos(math.pi * fraction))
        optimizer.zero_grad(set_to_none=True)
        loss = side.loss(batch)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % log_every == 0:
            print(
                f"step {steps} cpu {used / 60:.1f} min wall {(time.perf_counter() - start_wall) / 60:.1f} min "
                f"loss {loss.item():.3f}",
                flush=True,
            )
    cpu = time.process_time() - start_cpu
    return {
        "meta_steps": steps,
        "train_cpu_min": round(cpu / 60, 2),
        "train_wall_min": round((time.perf_counter() - start_wall) / 60, 2),
        "meta_steps_per_cpu_s": round(steps / max(cpu, 1e-9), 3),
    }


def test(side, dm) -> dict:
    accs = torch.cat([side.accuracies(batch) for batch in dm.test_dataloader()[0]]) * 100
    half_width = 1.96 * accs.std().item() / math.sqrt(len(accs))
    return {"test_acc": round(accs.mean().item(), 2), "test_ci95": round(half_width, 2), "test_episodes": len(accs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["metalab", "learn2learn"], required=True)
    parser.add_argument(
        "--cpu-minutes", type=float, required=True, help="training budget in CPU minutes of this process"
    )
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stop training then even if the budget is not used")
    parser.add_argument("--second-order", action="store_true", help="MAML instead of first-order MAML")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--test-episodes", type=int, default=TEST_EPISODES, help="1000 for results; fewer for a smoke test"
    )
    parser.add_argument("--note", default="", help="the record's notes: what else ran on the machine, pinning, etc.")
    args = parser.parse_args()
    if args.cpu_minutes <= 0:
        parser.error(f"--cpu-minutes {args.cpu_minutes}: must be > 0")
    deadline = None
    if args.deadline:
        try:
            hour, minute = (int(x) for x in args.deadline.split(":"))
            deadline = dt.datetime.now(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        except ValueError:
            parser.error(f"--deadline {args.deadline!r}: must be HH:MM (UTC)")
    from metalab.runtime import retain_freed_memory

    retain_freed_memory()  # what train.py does; for both sides alike
    torch.manual_seed(args.seed)
    side = (Ours if args.side == "metalab" else Learn2Learn)(first_order=not args.second_order)
    dm = datamodule(args.seed, args.test_episodes)
    result = {
        "side": args.side,
        "order": "second" if args.second_order else "first",
        **train(side, dm, args.cpu_minutes * 60, deadline, args.log_every),
        **test(side, dm),
    }
    print(result, flush=True)
    from metalab.report.records import append_record

    append_record(
        "benchmarks/meta/records/maml_budget_vs_learn2learn.jsonl",
        result,
        settings={
            "cpu_minutes": args.cpu_minutes,
            "deadline": args.deadline,
            "seed": args.seed,
            "test_episodes": args.test_episodes,
        },
        notes=args.note or None,
    )


if __name__ == "__main__":
    main()
