"""Thompson sampling and UCB1 of the experiment engine against MABWiser on the same Bernoulli arms.

Cumulative pseudo-regret over 10,000 pulls and 100 runs, ours (all runs at once through
metalab.services.bandits) and MABWiser 2.7's ThompsonSampling / UCB1(alpha=1) (one pull at a time).
Usage: taskset -c 1 python experiments/services/bandit_regret.py [--pulls 10000 --runs 100 --library-runs 100]
"""

from __future__ import annotations

import argparse

import numpy as np
from _record import HERE, now, write_record
from scipy import stats

from metalab.services.simulate import bandit_regret, mabwiser_regret

MEANS = [0.10, 0.15, 0.20, 0.25, 0.30]


def summary(regret: np.ndarray) -> dict:
    mean = regret.mean(axis=0)
    final = regret[:, -1]
    half = float(stats.t.ppf(0.975, len(final) - 1) * final.std(ddof=1) / np.sqrt(len(final)))
    pulls = regret.shape[1]
    checkpoints = {str(t): float(mean[t - 1]) for t in (100, 1000, 2000, 5000, 10000) if t <= pulls}
    half_point = pulls // 2
    # regret(T) / regret(T/2): 2 for linear regret, ~1 for logarithmic
    return {
        "final_mean": float(final.mean()),
        "final_ci95": [float(final.mean() - half), float(final.mean() + half)],
        "mean_at": checkpoints,
        "ratio_T_over_half_T": float(mean[-1] / mean[half_point - 1]),
        "uniform_would_be": float(pulls * (max(MEANS) - np.mean(MEANS))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--library-runs",
        type=int,
        default=100,
        help="runs of MABWiser (one Python call per pull: ~0.5 ms each on this CPU when idle)",
    )
    args = parser.parse_args()
    started = now()
    figures: dict = {
        "means": MEANS,
        "pulls": args.pulls,
        "runs": args.runs,
        "library_runs": args.library_runs,
        "library": "mabwiser 2.7.4",
    }
    curves = {}
    for allocation in ("thompson", "ucb"):
        ours = bandit_regret(allocation, MEANS, args.pulls, args.runs, seed=0)
        theirs = mabwiser_regret(allocation, MEANS, args.pulls, args.library_runs, seed=1)
        welch = stats.ttest_ind(ours[:, -1], theirs[:, -1], equal_var=False)
        figures[allocation] = {
            "ours": summary(ours),
            "mabwiser": summary(theirs),
            "welch_t_final": float(welch.statistic),
            "welch_p_final": float(welch.pvalue),
        }
        curves[allocation] = (ours.mean(axis=0), theirs.mean(axis=0))
        print(allocation, figures[allocation])
    _plot(curves, args.pulls)
    write_record("bandit_regret", figures, started)


def _plot(curves: dict, pulls: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    t = np.arange(1, pulls + 1)
    for allocation, (ours, theirs) in curves.items():
        ax.plot(t, ours, label=f"{allocation} (metalab)")
        ax.plot(t, theirs, "--", label=f"{allocation} (MABWiser)")
    ax.set_xlabel("pulls")
    ax.set_ylabel("mean cumulative regret")
    ax.set_title(f"Bernoulli arms {MEANS}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "bandit_regret.png", dpi=100)


if __name__ == "__main__":
    main()
