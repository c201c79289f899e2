"""Performance predictor on simulated jobs with a known duration law: interval coverage and duration error.

A job is a profile vector of four numbers in [0, 1] (data size, model size, parallelism, cache hit
rate). Its true log-duration is smooth in them, and each run adds multiplicative noise of 3%
(log-normal sigma 0.03): that noise is the floor no predictor can beat (median |noise| = 2.0%). Error
rates and resources follow their own laws with their own noise. For each library size (100, 1,000,
10,000 completed jobs) the predictor (``metalab.services.predictor.fit_predict``, the service's own
function: k = 10 nearest jobs, MAPIE split conformal at 90%) is fitted on a fresh library and scored on
2,000 fresh held-out jobs, repeated over several libraries.

Reported: share of held-out jobs inside their 90% interval (each target), the median absolute
relative duration error and the share of jobs within +-30% / +-15% / +-5% (the mission's figures for 100 /
1,000 / 10,000 jobs).

Usage: python experiments/services/predictor_sim.py [--repeats 20]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _record import HERE  # noqa: E402

from metalab.report.records import append_record  # noqa: E402
from metalab.services.predictor import TARGETS, PredictorConfig, fit_predict  # noqa: E402

SIZES = (100, 1_000, 10_000)
MISSION_TOLERANCE = {100: 0.30, 1_000: 0.15, 10_000: 0.05}
DURATION_NOISE = 0.03


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = rng.uniform(0.0, 1.0, size=(n, 4))
    log_duration = 5.0 + 2.0 * x[:, 0] + 1.0 * x[:, 1] ** 2 - 0.8 * x[:, 2] + 0.3 * np.sin(3 * x[:, 3])
    duration = np.exp(log_duration + rng.normal(0.0, DURATION_NOISE, n))
    error_rate = np.clip(0.01 + 0.05 * x[:, 1] * (1 - x[:, 3]) + rng.normal(0.0, 0.005, n), 0.0, 1.0)
    resources = duration * (1 + 3 * x[:, 2]) / 3600 * rng.lognormal(0.0, 0.05, n)
    return x, {"duration_s": duration, "error_rate": error_rate, "resources": resources}


def score(size: int, repeat: int, held_out: int) -> dict[str, float]:
    rng = np.random.default_rng(10_000 * size + repeat)
    x, targets = simulate(size, rng)
    fresh_x, fresh = simulate(held_out, rng)
    predictions = fit_predict(x, targets, fresh_x, PredictorConfig(seed=repeat))
    out = {}
    for name in TARGETS:
        low = np.array([p.interval[name][0] for p in predictions])
        high = np.array([p.interval[name][1] for p in predictions])
        out[f"coverage_{name}"] = float(np.mean((fresh[name] >= low) & (fresh[name] <= high)))
    estimate = np.array([p.estimate["duration_s"] for p in predictions])
    relative = np.abs(estimate / fresh["duration_s"] - 1)
    out["median_relative_error"] = float(np.median(relative))
    out["within_tolerance"] = float(np.mean(relative <= MISSION_TOLERANCE[size]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--held-out", type=int, default=2000)
    args = parser.parse_args()
    rows, results = [], {}
    for size in SIZES:
        runs = [score(size, r, args.held_out) for r in range(args.repeats)]
        results[size] = runs
        coverage = np.array([r["coverage_duration_s"] for r in runs])
        errors = np.array([r["median_relative_error"] for r in runs])
        rows.append(
            {
                "completed_jobs": size,
                "repeats": args.repeats,
                "coverage_duration_mean": float(coverage.mean()),
                "coverage_duration_min": float(coverage.min()),
                "coverage_duration_max": float(coverage.max()),
                "coverage_error_rate_mean": float(np.mean([r["coverage_error_rate"] for r in runs])),
                "coverage_resources_mean": float(np.mean([r["coverage_resources"] for r in runs])),
                "median_duration_error": float(np.median(errors)),
                "mission_tolerance": MISSION_TOLERANCE[size],
                "share_within_tolerance": float(np.mean([r["within_tolerance"] for r in runs])),
            }
        )
        print(rows[-1], flush=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, size in enumerate(SIZES):
        left.scatter(
            np.full(args.repeats, i) + np.random.default_rng(i).uniform(-0.15, 0.15, args.repeats),
            [r["coverage_duration_s"] for r in results[size]],
            s=12,
        )
    left.axhspan(0.88, 0.92, color="g", alpha=0.15, label="88-92%")
    left.axhline(0.9, color="k", lw=0.8)
    left.set(
        xticks=range(len(SIZES)),
        xticklabels=[f"{s:,}" for s in SIZES],
        xlabel="completed jobs in the library",
        ylabel="held-out coverage of 90% duration intervals",
        title=f"{args.held_out} held-out jobs per library",
    )
    left.legend()
    right.plot(
        [f"{s:,}" for s in SIZES], [r["median_duration_error"] * 100 for r in rows], "o-", label="median |error|"
    )
    right.plot(
        [f"{s:,}" for s in SIZES], [MISSION_TOLERANCE[s] * 100 for s in SIZES], "k--", label="mission: +-30/15/5%"
    )
    right.axhline(
        np.median(np.abs(np.random.default_rng(0).normal(0, DURATION_NOISE, 100_000))) * 100,
        color="gray",
        ls=":",
        label="noise floor (median |noise|)",
    )
    right.set(
        xlabel="completed jobs in the library", ylabel="duration error (%)", yscale="log", title="k = 10 nearest jobs"
    )
    right.legend()
    figure.tight_layout()
    figure.savefig(HERE / "predictor.png", dpi=110)
    append_record(
        "experiments/services/records/predictor.jsonl",
        rows,
        settings={
            "k": 10,
            "confidence": 0.9,
            "calibration_fraction": 0.25,
            "held_out": args.held_out,
            "duration_noise_sigma": DURATION_NOISE,
            "figure": "predictor.png",
        },
    )


if __name__ == "__main__":
    main()
