"""Experiment engine under continuous monitoring: A/A false-positive rate, A/B power and stopping time.

Each simulated experiment is analysed after every outcome with the engine's own mSPRT
(metalab.services.experiments.look_p_values), equal allocation, default settings (alpha 0.05,
mixture_scale 0.1, min_samples_per_variant 100), up to --horizon outcomes.
Usage: taskset -c 1 python experiments/services/sequential_ab.py [--experiments 1000 --horizon 10000]
"""

from __future__ import annotations

import argparse
import time

from _record import now, write_record
from scipy import stats

from metalab.services.simulate import sequential_monitoring

SCENARIOS = [  # name, means, binary, sd
    ("aa_binary_p0.10", [0.10, 0.10], True, 1.0),
    ("aa_continuous_normal", [0.0, 0.0], False, 1.0),
    ("aa_three_variants_binary_p0.10", [0.10, 0.10, 0.10], True, 1.0),
    ("ab_binary_0.10_vs_0.12", [0.10, 0.12], True, 1.0),
    ("ab_binary_0.10_vs_0.13", [0.10, 0.13], True, 1.0),
    ("ab_continuous_0_vs_0.1sd", [0.0, 0.1], False, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=10_000)
    args = parser.parse_args()
    started = now()
    figures: dict = {
        "experiments": args.experiments,
        "horizon_outcomes": args.horizon,
        "alpha": 0.05,
        "mixture_scale": 0.1,
        "min_samples_per_variant": 100,
        "allocation": "equal",
        "scenarios": {},
    }
    for seed, (name, means, binary, sd) in enumerate(SCENARIOS):
        clock = time.perf_counter()
        result = sequential_monitoring(args.experiments, args.horizon, means, binary, sd=sd, seed=seed)
        rejected = int((result["stopped_at"] > 0).sum())
        ci = stats.binomtest(rejected, args.experiments).proportion_ci(0.95, method="wilson")
        row = {
            "means": means,
            "binary": binary,
            "rejection_rate": result["rejection_rate"],
            "rejection_rate_ci95": [float(ci.low), float(ci.high)],
            "mean_stopping_time_of_rejections": result["mean_stopping_time"],
            "seconds": round(time.perf_counter() - clock, 1),
        }
        row["kind"] = "false_positive_rate" if len(set(means)) == 1 else "power"
        figures["scenarios"][name] = row
        print(name, row, flush=True)
    write_record("sequential_ab", figures, started)


if __name__ == "__main__":
    main()
