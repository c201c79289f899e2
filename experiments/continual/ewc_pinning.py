"""How much of the network EWC's proximal step holds on Permuted MNIST, per lambda (issue 24).

Trains task 0 of ``+experiment=permuted_mnist/ewc`` exactly as the learner does (same stream, MLP,
optimiser and batches, through :func:`~metalab.learners.continual.loop.continual_step`), computes the
task's exact diagonal Fisher as the method does after the task, and reports its distribution and, for
each lambda, the share of weights whose proximal step ``theta = m + (theta' - m) / (1 + lr lambda F)``
keeps less than half (``lr lambda F > 1``) or less than 90% (``> 1/9``) of an SGD move: the weights EWC
actually pins. Also the Fisher's sum against ``lr`` so the scale is concrete.

    python experiments/continual/ewc_pinning.py --seed 9

Appends to ``benchmarks/continual/records/permuted_mnist.jsonl`` (benchmark ``ewc_pinning``).
"""

from __future__ import annotations

import argparse
from typing import Any

import hydra
import lightning as L
import torch

from metalab.learners.continual.loop import PlainLearner, continual_step
from metalab.learners.continual.methods import StreamInfo
from metalab.report.records import append_record

RECORD = "benchmarks/continual/records/permuted_mnist.jsonl"
LAMBDAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hydra import compose, initialize_config_dir

    from metalab.report.records import repo_root

    with initialize_config_dir(config_dir=str(repo_root() / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["+experiment=permuted_mnist/ewc", f"seed={args.seed}", "paths.output_dir=logs/scratch"],
        )
    L.seed_everything(args.seed, workers=True)
    stream = hydra.utils.instantiate(cfg.data)
    stream.setup("fit")
    model = hydra.utils.instantiate(cfg.model)
    method = hydra.utils.instantiate(cfg.learner.method)
    lr = float(cfg.learner.optimizer.lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    info = StreamInfo(
        stream.n_tasks,
        stream.classes_per_task,
        stream.train_examples(),
        stream.train_tasks[0].x[:1],
        stream.n_classes,
        stream.scenarios,
    )
    learner = PlainLearner(model, optimizer, [(t.x, t.y) for t in stream.train_tasks], info)
    method.setup(info)
    model.train()
    for step, batch in enumerate(stream.task_train_loader(0, epoch=0)):
        continual_step(learner, method, batch, 0, optimizer, step=step)
    fisher = method.task_fisher(learner, 0)
    values = torch.cat([f.flatten() for f in fisher.values()]).double()
    quantiles = torch.quantile(values, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    row: dict[str, Any] = {
        "seed": args.seed,
        "weights": values.numel(),
        "fisher_median": quantiles[0],
        "fisher_p90": quantiles[1],
        "fisher_p99": quantiles[2],
        "fisher_max": float(values.max()),
        "lr": lr,
    }
    for lam in LAMBDAS:
        stiffness = lr * lam * values
        row[f"lambda{lam:g}_pct_held_half"] = round(100 * float((stiffness > 1).double().mean()), 3)
        row[f"lambda{lam:g}_pct_held_10pct"] = round(100 * float((stiffness > 1 / 9).double().mean()), 3)
    for key, value in row.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if not args.no_record:
        append_record(
            RECORD,
            [row],
            benchmark="ewc_pinning",
            settings={"experiment": "permuted_mnist/ewc", "task": 0, "fisher": "empirical, all 1,000 images"},
        )


if __name__ == "__main__":
    main()
