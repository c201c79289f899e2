"""Matching Networks on Omniglot: why the plain cosine read-out learns slowly, in short runs (issue 32).

One recipe per process: the experiment ``omniglot/matching_<shape>`` with the given Hydra overrides (e.g.
``learner.scale=10``, ``learner.learn_scale=true``, ``learner.fce=true``), or ``--protonet`` for Prototypical
Networks (Snell et al. 2017) on the very same episodes and Conv4, trained for ``--steps`` steps with Adam
annealed by a cosine to 1 % over those steps (as the CPU budgets anneal, ``metalab.budget``). Trained on the
Vinyals *train* classes and validated on the held-out *val* classes (``data.pools.split=vinyals``), so that
choosing a recipe never looks at the test characters. Validation (``--val-episodes`` fixed episodes of the
test shape, 15 queries per class) every ``--every`` steps; its time is not counted in ``cpu_seconds``
(``time.process_time`` of the training steps). The curve is appended to
``benchmarks/meta/records/matching_readout_probe.jsonl``. Example::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/meta/matching_readout_probe.py scale10 learner.scale=10
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from metalab.learners.meta.episodic import EpisodicLearner
from metalab.learners.meta.protonet import ProtoNet
from metalab.report.records import append_record, repo_root
from metalab.run import instantiate

ROOT = repo_root()
RECORDS = "benchmarks/meta/records/matching_readout_probe.jsonl"


def compose_run(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config ``train.py`` would see, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
    return cfg


def build_learner(cfg: DictConfig, protonet: bool) -> EpisodicLearner:
    """The experiment's learner, or a ProtoNet around the same backbone config and optimiser."""
    if protonet:
        return ProtoNet(instantiate(cfg.model), optimizer=instantiate(cfg.learner.optimizer))
    return instantiate(cfg.learner, backbone=instantiate(cfg.model), scheduler=None)


def validate(learner: EpisodicLearner, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean query accuracy (percent) over the fixed validation episodes, batch norm in eval mode."""
    learner.eval()
    with torch.no_grad():
        hits = [(learner.query_logits(b).argmax(-1) == b["query_labels"]).float().mean(1) for b in batches]
    learner.train()
    return round(float(torch.cat(hits).mean() * 100), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of omniglot/matching_<shape>")
    parser.add_argument("--shape", default="5w1s", choices=["5w1s", "5w5s", "20w1s", "20w5s"])
    parser.add_argument("--protonet", action="store_true", help="train ProtoNet on the same episodes instead")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--val-episodes", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = compose_run(
        Path(tempfile.gettempdir()) / "matching_readout_probe",
        [
            f"+experiment=omniglot/matching_{args.shape}",
            "seed=0",
            "trainer.precision=32-true",
            "data.pools.split=vinyals",  # val classes held out of training
            f"data.train_episodes={args.steps}",
            f"data.val_episodes={args.val_episodes}",
            *args.overrides,
        ],
    )
    data = instantiate(cfg.data)
    data.setup("fit")
    learner = build_learner(cfg, args.protonet)
    learner.backbone.to(memory_format=torch.channels_last)
    optimizer = learner.optimizer_factory(params=learner.parameters())
    anneal = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0)))
    )
    val = list(data.val_dataloader())
    curve, cpu = [(0.0, 0, validate(learner, val), None)], 0.0
    for step, batch in enumerate(data.train_dataloader(), start=1):
        start = time.process_time()
        loss, _ = learner.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        anneal.step()
        cpu += time.process_time() - start
        if step % args.every == 0 or step == args.steps:
            scale = getattr(learner, "scale", None)
            scale = round(float(torch.as_tensor(scale).detach()), 3) if scale is not None else None
            curve.append((round(cpu, 1), step, validate(learner, val), scale))
            print(args.name, curve[-1], f"loss {loss.item():.3f}", flush=True)
    append_record(
        RECORDS,
        [
            {"recipe": args.name, "shape": args.shape, "cpu_seconds": c, "steps": s, "val_acc": v, "scale": k}
            for c, s, v, k in curve
        ],
        settings={
            "overrides": args.overrides,
            "protonet": args.protonet,
            "steps": args.steps,
            "val_episodes": args.val_episodes,
        },
        notes=f"loadavg {' '.join(open('/proc/loadavg').read().split()[:3])} at the end",
    )


if __name__ == "__main__":
    main()
