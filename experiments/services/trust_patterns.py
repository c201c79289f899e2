"""Trust and patterns on simulated agents with known ground truth.

1. Ranking: 10 agents with true accuracies 0.50..0.95, 200 evaluated outcomes each; Spearman correlation
   of trust with the true accuracy, over --seeds seeds.
2. Turning bad: an agent right 90% of the time for 200 outcomes turns to 30%; outcomes until its trust is
   at or below the threshold (0.6), over --seeds seeds.
3. Patterns: planted rules (metalab.services.simulate.planted_world); patterns discovered on 1,500
   subjects, precision/recall against the planted ones, accuracy/coverage on 500 held-out subjects.
Usage: taskset -c 1 python experiments/services/trust_patterns.py [--seeds 100]
"""

from __future__ import annotations

import argparse

import numpy as np
from _record import now, write_record
from scipy import stats

from metalab.services.patterns import accuracy_and_coverage, discover
from metalab.services.simulate import outcomes_until_distrusted, pattern_key, planted_world, trust_ranking
from metalab.services.trust import TrustConfig

ACCURACIES = [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95]


def describe(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--pattern-seeds", type=int, default=20)
    args = parser.parse_args()
    started = now()
    config = TrustConfig()
    rho = [
        stats.spearmanr(ACCURACIES, trust_ranking(ACCURACIES, 200, config, seed)).statistic
        for seed in range(args.seeds)
    ]
    steps = [outcomes_until_distrusted(0.9, 0.3, 200, 500, config, seed) for seed in range(args.seeds)]
    never = sum(s is None for s in steps)
    figures: dict = {
        "trust_config": {
            "weights": config.weights,
            "window": config.window,
            "half_life": config.half_life,
            "confidence_k": config.confidence_k,
            "threshold": config.threshold,
        },
        "ranking": {
            "accuracies": ACCURACIES,
            "outcomes_per_agent": 200,
            "seeds": args.seeds,
            "spearman": describe(rho),
            "share_of_seeds_at_least_0.9": float(np.mean(np.asarray(rho) >= 0.9)),
        },
        "turned_bad": {
            "good": 0.9,
            "bad": 0.3,
            "outcomes_before": 200,
            "seeds": args.seeds,
            "outcomes_until_below_threshold": describe([s for s in steps if s is not None]),
            "never_within_500": never,
        },
    }
    print(figures, flush=True)
    rows = []
    for seed in range(args.pattern_seeds):
        train, test = planted_world(1500, seed=2 * seed), planted_world(500, seed=2 * seed + 1)
        found = discover(train.records)
        keys = {pattern_key(p.kind, p.condition) for p in found}
        hits = len(keys & train.planted)
        quality = accuracy_and_coverage(test.records, found)
        rows.append(
            {
                "precision": hits / max(len(keys), 1),
                "recall": hits / len(train.planted),
                "accuracy": quality["accuracy"],
                "coverage": quality["coverage"],
                "spurious": sorted(f"{k}:{v}" for k, v in keys - train.planted),
                "missed": sorted(f"{k}:{v}" for k, v in train.planted - keys),
            }
        )
    figures["patterns"] = {
        "seeds": args.pattern_seeds,
        "train_subjects": 1500,
        "test_subjects": 500,
        "planted": len(planted_world(1, 0).planted),
        **{m: describe([r[m] for r in rows]) for m in ("precision", "recall", "accuracy", "coverage")},
        "spurious_seen": sorted({s for r in rows for s in r["spurious"]}),
        "missed_seen": sorted({s for r in rows for s in r["missed"]}),
    }
    print(figures["patterns"], flush=True)
    write_record("trust_patterns", figures, started)


if __name__ == "__main__":
    main()
