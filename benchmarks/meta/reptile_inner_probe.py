"""Reptile on Omniglot 5-way 1-shot: which inner loop learns faster per CPU-second (issue 32).

One inner-loop recipe per process, trained for a fixed budget of CPU time (``time.process_time``, so that
processes run side by side on one busy core compare fairly), eps held at 1.0 (no anneal), validation
(transductive, a fixed set of 5w1s episodes) every ``--every`` CPU-seconds of training; validation time is not
counted. The curve ``(cpu_seconds, meta_steps, val_acc)`` is appended to
``benchmarks/meta/records/reptile_inner_probe.jsonl``. Run the recipes side by side, e.g.::

    for r in "adam_b10" "sgd_full learner.inner_optimizer=sgd learner.inner_lr=0.1 learner.inner_batch=null \
learner.eval_inner_batch=null"; do
        set -- $r; OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/meta/reptile_inner_probe.py "$@" &
    done
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from metalab.report.records import append_record, repo_root
from metalab.run import instantiate

ROOT = repo_root()


def compose_run(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config ``train.py`` would see, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of omniglot/reptile_5w1s")
    parser.add_argument("--cpu-seconds", type=float, default=80.0)
    parser.add_argument("--every", type=float, default=20.0)
    parser.add_argument("--val-episodes", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = compose_run(
        Path(tempfile.gettempdir()) / "reptile_inner_probe",
        [
            "+experiment=omniglot/reptile_5w1s",
            "seed=0",
            "trainer.precision=32-true",
            f"data.val_episodes={args.val_episodes}",
            *args.overrides,
        ],
    )
    data = instantiate(cfg.data)
    data.setup("fit")
    learner = instantiate(cfg.learner, backbone=instantiate(cfg.model))
    learner.backbone.to(memory_format=torch.channels_last)
    learner.eval_transductive = True
    val = list(data.val_dataloader())
    outer = torch.optim.SGD(learner.backbone.parameters(), lr=1.0)

    def validate() -> float:
        learner.eval()
        hits = [(learner.query_logits(b).argmax(-1) == b["query_labels"]).float().mean(1) for b in val]
        learner.train()
        return round(float(torch.cat(hits).mean() * 100), 2)

    curve, cpu, steps, next_eval = [(0.0, 0, validate())], 0.0, 0, args.every
    batches = iter(data.train_dataloader())
    while cpu < args.cpu_seconds:
        batch = next(batches, None)
        if batch is None:
            batches = iter(data.train_dataloader())
            continue
        start = time.process_time()
        params = dict(learner.backbone.named_parameters())
        fast = learner.adapt_support(batch["support"], batch["support_labels"], learner.inner.steps, True)
        outer.zero_grad()
        with torch.no_grad():
            for name, p in params.items():
                p.grad = p - fast[name].mean(0)  # Reptile: theta <- theta + eps * mean_t(theta_t - theta)
        outer.step()
        cpu += time.process_time() - start
        steps += 1
        if cpu >= next_eval:
            curve.append((round(cpu, 1), steps, validate()))
            print(args.name, curve[-1], flush=True)
            next_eval += args.every
    append_record(
        "benchmarks/meta/records/reptile_inner_probe.jsonl",
        [{"recipe": args.name, "cpu_seconds": c, "meta_steps": s, "val_acc": v} for c, s, v in curve],
        settings={"overrides": args.overrides, "cpu_seconds": args.cpu_seconds, "val_episodes": args.val_episodes},
        notes=f"loadavg {' '.join(open('/proc/loadavg').read().split()[:3])} at the end",
    )


if __name__ == "__main__":
    main()
