"""Test accuracy after the same CPU budget: our MAML engine against learn2learn's, on the same network.

Trains one side (``--side metalab`` or ``--side learn2learn``) on Omniglot (Vinyals train+val
characters with rotations) until the process has used ``--cpu-minutes`` of CPU time, and tests on
1000 5-way 1-shot episodes of the Vinyals test characters (3 adaptation steps, 15 queries per class,
the same episodes for both sides) at each of ``--marks`` (CPU-minutes of training, default: the budget
only), so that one run gives accuracy against CPU time; each test appends a record. The tests' CPU time
is not counted in the training clock.

Both sides: learn2learn's ``OmniglotCNN`` layout (Finn et al. 2017; ours is ``model=conv4_strided``),
each side with its own default initialisation, meta-batch 32 tasks (``--tasks``) of 5-way 1-shot with 1 query per
class (as ``omniglot/fomaml_5w1s``), 1 inner step, first order unless ``--second-order``. Each side's
learning rates default to its own recipe: ours inner lr 0.4 and Adam 1e-3 annealed by a cosine over the
fraction of the CPU budget used (to 1e-5), as ``omniglot/maml_5w1s``; learn2learn's those of its
``examples/vision/maml_omniglot.py`` (fast lr 0.5, Adam 3e-3, constant); ``--inner-lr``, ``--meta-lr``
and ``--schedule`` override them. ``--layout`` sets learn2learn's memory layout (ours always runs
channels-last). Batch norm uses
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
import itertools
import math
import time
from functools import partial

import torch
import torch.nn.functional as F

WAY, SHOT, TRAIN_QUERY, TASKS, MIN_LR = 5, 1, 1, 32, 1e-5
# each side's own recipe: (inner lr, Adam's rate, schedule); ours as omniglot/maml_5w1s, learn2learn's as its
# examples/vision/maml_omniglot.py (fast_lr=0.5, meta_lr=0.003, no schedule)
RECIPES = {"metalab": (0.4, 1e-3, "cosine"), "learn2learn": (0.5, 3e-3, "constant")}
TEST_EPISODES, TEST_QUERY, EVAL_STEPS = 1000, 15, 3


def datamodule(seed: int, test_episodes: int = TEST_EPISODES, tasks: int = TASKS):
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
        tasks_per_batch=tasks,
        eval_tasks_per_batch=50,
        seed=seed,
    )
    dm.setup("fit")
    return dm


class Ours:
    """The MAML learner ``train.py`` runs (grouped fast path), driven by a plain loop."""

    def __init__(self, first_order: bool, inner_lr: float, layout: str):
        from metalab.learners.meta.maml import MAML
        from metalab.models.conv4 import Conv4

        model = Conv4(out_features=WAY, stride=2, pool=False, readout="mean")
        self.learner = MAML(
            model,
            optimizer=torch.optim.Adam,
            inner_steps=1,
            inner_lr=inner_lr,
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

    def __init__(self, first_order: bool, inner_lr: float, layout: str):
        import learn2learn as l2l

        model = l2l.vision.models.OmniglotCNN(output_size=WAY)
        if layout == "channels_last":  # weights channels-last: the convolutions then run channels-last
            model.to(memory_format=torch.channels_last)
        self.maml = l2l.algorithms.MAML(model, lr=inner_lr, first_order=first_order)
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


def meta_batches(dm):
    """Meta-batches without end, epoch after epoch of fresh episodes (the sampler's epoch picks them).

    One pass of the loader is ``train_episodes`` meta-steps; a fast side on a long budget outruns it (first
    order made 50,000 steps in 101 of 120 CPU-minutes), and the budget, not the pass, must end training."""
    loader = dm.train_dataloader()
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def train(side, dm, args, deadline: dt.datetime | None, on_mark) -> None:
    """Meta-trains ``side`` until ``args.cpu_minutes`` of this process's CPU time, calling ``on_mark(state)``
    when training has used each of ``args.marks`` CPU-minutes; the CPU time spent in ``on_mark`` (the tests)
    is taken off the training clock."""
    budget_s = args.cpu_minutes * 60
    optimizer = torch.optim.Adam(side.parameters, lr=args.meta_lr)
    marks = [m * 60 for m in args.marks]
    start_cpu, start_wall, steps, excluded_cpu, excluded_wall = time.process_time(), time.perf_counter(), 0, 0.0, 0.0
    wall_s = (deadline - dt.datetime.now(dt.UTC)).total_seconds() if deadline is not None else math.inf

    def state() -> dict:
        cpu = time.process_time() - start_cpu - excluded_cpu
        wall = time.perf_counter() - start_wall - excluded_wall
        return {
            "meta_steps": steps,
            "train_cpu_min": round(cpu / 60, 2),
            "train_wall_min": round(wall / 60, 2),
            "meta_steps_per_cpu_s": round(steps / max(cpu, 1e-9), 3),
        }

    for batch in meta_batches(dm):
        used = time.process_time() - start_cpu - excluded_cpu
        wall_fraction = (time.perf_counter() - start_wall - excluded_wall) / wall_s
        while marks and (used >= marks[0] or wall_fraction >= 1):
            marks.pop(0)
            before_cpu, before_wall = time.process_time(), time.perf_counter()
            on_mark(state())
            excluded_cpu += time.process_time() - before_cpu
            excluded_wall += time.perf_counter() - before_wall
        # the schedule's clock is the budget (not a step count); the wall time left when the deadline would
        # end the run first
        fraction = max(used / budget_s, wall_fraction)
        if fraction >= 1 or not marks:
            break
        if args.schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = MIN_LR + 0.5 * (args.meta_lr - MIN_LR) * (1 + math.cos(math.pi * fraction))
        optimizer.zero_grad(set_to_none=True)
        loss = side.loss(batch)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % args.log_every == 0:
            print(f"step {steps} {state()} loss {loss.item():.3f}", flush=True)


def test(side, dm) -> dict:
    accs = torch.cat([side.accuracies(batch) for batch in dm.test_dataloader()[0]]) * 100
    half_width = 1.96 * accs.std().item() / math.sqrt(len(accs))
    return {"test_acc": round(accs.mean().item(), 2), "test_ci95": round(half_width, 2), "test_episodes": len(accs)}


def marks_arg(text: str) -> list[float]:
    try:
        marks = sorted(float(x) for x in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be CPU-minutes separated by commas, e.g. 15,30,60,120"
        ) from err
    if not marks or marks[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: every mark must be > 0")
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["metalab", "learn2learn"], required=True)
    parser.add_argument(
        "--cpu-minutes", type=float, required=True, help="training budget in CPU minutes of this process"
    )
    parser.add_argument(
        "--marks",
        type=marks_arg,
        default=None,
        help="CPU-minutes at which to test, e.g. 15,30,60,120 (default: the budget)",
    )
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stop training then even if the budget is not used")
    parser.add_argument("--second-order", action="store_true", help="MAML instead of first-order MAML")
    parser.add_argument("--inner-lr", type=float, default=None, help="default: the side's own recipe (RECIPES)")
    parser.add_argument("--meta-lr", type=float, default=None, help="Adam's rate; default: the side's own recipe")
    parser.add_argument("--schedule", choices=["cosine", "constant"], default=None, help="default: the side's own")
    parser.add_argument(
        "--tasks", type=int, default=TASKS, help=f"meta-batch: tasks per meta-step (default {TASKS}, both sides)"
    )
    parser.add_argument(
        "--layout", choices=["nchw", "channels_last"], default="nchw", help="learn2learn's memory layout"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--test-episodes", type=int, default=TEST_EPISODES, help="1000 for results; fewer for a smoke test"
    )
    parser.add_argument("--note", default="", help="the record's notes: what else ran on the machine, pinning, etc.")
    args = parser.parse_args()
    if args.cpu_minutes <= 0:
        parser.error(f"--cpu-minutes {args.cpu_minutes}: must be > 0")
    if args.tasks < 1:
        parser.error(f"--tasks {args.tasks}: must be >= 1")
    args.marks = args.marks or [args.cpu_minutes]
    if args.marks[-1] > args.cpu_minutes:
        parser.error(f"--marks {args.marks}: the last mark must be <= --cpu-minutes {args.cpu_minutes}")
    inner_lr, meta_lr, schedule = RECIPES[args.side]
    args.inner_lr = args.inner_lr if args.inner_lr is not None else inner_lr
    args.meta_lr = args.meta_lr if args.meta_lr is not None else meta_lr
    args.schedule = args.schedule or schedule
    deadline = None
    if args.deadline:
        try:
            hour, minute = (int(x) for x in args.deadline.split(":"))
            deadline = dt.datetime.now(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        except ValueError:
            parser.error(f"--deadline {args.deadline!r}: must be HH:MM (UTC)")
    from metalab.report.records import append_record
    from metalab.runtime import retain_freed_memory

    retain_freed_memory()  # what train.py does; for both sides alike
    torch.manual_seed(args.seed)
    side = (Ours if args.side == "metalab" else Learn2Learn)(
        first_order=not args.second_order, inner_lr=args.inner_lr, layout=args.layout
    )
    dm = datamodule(args.seed, args.test_episodes, args.tasks)
    settings = {
        "cpu_minutes": args.cpu_minutes,
        "marks": args.marks,
        "deadline": args.deadline,
        "seed": args.seed,
        "test_episodes": args.test_episodes,
        "inner_lr": args.inner_lr,
        "meta_lr": args.meta_lr,
        "schedule": args.schedule,
        "tasks": args.tasks,
        "layout": "channels_last" if args.side == "metalab" else args.layout,
    }

    def on_mark(state: dict) -> None:
        result = {"side": args.side, "order": "second" if args.second_order else "first", **state, **test(side, dm)}
        print(result, flush=True)
        append_record(
            "benchmarks/meta/records/maml_budget_vs_learn2learn.jsonl",
            result,
            settings=settings,
            notes=args.note or None,
        )

    train(side, dm, args, deadline, on_mark)


if __name__ == "__main__":
    main()
