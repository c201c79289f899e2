"""Choose Deep CORAL's weight on a validation rotation that no reported target uses (issue 34).

Sun & Saenko (2016, Sec. 3.2) set the CORAL weight so that the classification and CORAL losses are about equal
at the end of training. This probe trains the study's source model (conf/experiment/rotated_mnist/base.yaml's
network, data and step budget) once, prints both losses, then adapts it to a *validation* target rotation
(105 degrees by default: between the reported targets 90 and 120, not one of them) with unlabelled-target CORAL
at several weights, and records the target accuracy of each beside source-only. The study's weight is taken
from here, never from the reported targets.

    python experiments/domain_adaptation/coral_weight_probe.py --weights 1 10 100 --angle 105
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from metalab.adapt.alignment import coral_loss
from metalab.learners.domain.adaptations import Coral, Episode
from metalab.report.records import append_record, repo_root

RECORD = "experiments/domain_adaptation/records/coral_weight_probe.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--angle", type=float, default=105.0)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(repo_root() / "conf"), version_base="1.3"):
        cfg = compose("train", ["+experiment=rotated_mnist/coral_unlabelled", f"seed={args.seed}"])
    cfg.data.target_angles = [args.angle]
    cfg.data.data_dir = None
    torch.manual_seed(args.seed)
    data, model = instantiate(cfg.data), instantiate(cfg.model)
    data.setup()
    start = time.process_time()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learner.optimizer.lr)
    for batch in list(data.train_dataloader())[: cfg.trainer.max_steps]:
        optimizer.zero_grad()
        F.cross_entropy(model(batch["x"]), batch["y"]).backward()
        optimizer.step()
    episode_batch = next(iter(data.test_dataloader()[0]))
    episode = Episode(
        *(episode_batch[k][0] for k in ("support", "support_labels", "unlabelled", "source", "source_labels")),
        seed=int(episode_batch["seed"][0]),
    )
    query, labels = episode_batch["query"][0], episode_batch["query_labels"][0]
    model.eval()
    with torch.no_grad():
        fs, ft = model.features(episode.source), model.features(episode.unlabelled)
        ce = float(F.cross_entropy(model.head(fs), episode.source_labels))
        coral = float(coral_loss(fs, ft))
        source_only = float((model(query).argmax(-1) == labels).float().mean() * 100)
    rows = [{"weight": 0.0, "method": "source-only", "target_acc": round(source_only, 2)}]
    base = {key: value for key, value in cfg.learner.adaptation.items() if key != "_target_"}
    for weight in args.weights:
        adapted = Coral(**{**base, "coral_weight": weight}).adapt(model, episode)
        with torch.no_grad():
            acc = float((adapted(query).argmax(-1) == labels).float().mean() * 100)
            coral_after = float(coral_loss(adapted.features(episode.source), adapted.features(episode.unlabelled)))
        rows.append(
            {"weight": weight, "method": "coral_unlabelled", "target_acc": round(acc, 2), "coral_after": coral_after}
        )
    for row in rows:
        print(row)
    print(
        f"source model: source cross-entropy {ce:.4f}, CORAL loss {coral:.5f} (ratio {ce / max(coral, 1e-12):.1f}); "
        f"CPU {time.process_time() - start:.1f} s"
    )
    if not args.no_record:
        append_record(
            RECORD,
            rows,
            settings={
                "angle": args.angle,
                "seed": args.seed,
                "source_ce": ce,
                "source_coral": coral,
                "steps": cfg.trainer.max_steps,
                "adaptation": dict(base),
            },
        )


if __name__ == "__main__":
    main()
