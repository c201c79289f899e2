"""Domain adaptation on Rotated MNIST (issue 34): the k-shot table, paired gaps and similarity vs transfer.

The study ``experiments/domain_adaptation.yaml`` makes the runs (``metalab report experiments/domain_adaptation.yaml``)
and commits each run's ``metrics.json``; this script reads the records that match the study's configs now
(stale ones are left out, as in the report) and writes what the issue asks for:

- the k-shot table: each method's target accuracy at every k, averaged over the 8 targets (and 3 episodes),
  mean and 95% t-interval over seeds;
- paired gaps (each seed's mean over targets, then a t-interval over seeds): every method against training
  from scratch at the same k, unlabelled-target CORAL against source-only, CORAL with labels against
  fine-tuning all; beside it, a secondary view over every (seed, target) pair (t-interval as if the targets
  were independent draws, and how many pairs are above);
- per target: the domain distances of the source model's features (linear MMD, proxy A-distance; from the
  source-only runs, before adaptation) beside the transfer figures;
- Spearman's rank correlation over the targets between each distance and each transfer measure, with a
  95% percentile bootstrap interval (targets resampled with replacement, 10,000 resamples, seeded).

    python experiments/domain_adaptation/summary.py             # prints, and appends the records
    python experiments/domain_adaptation/summary.py --no-record

Appends to ``experiments/domain_adaptation/records/summary.jsonl`` (metalab.report.records.append_record):
``da_kshot``, ``da_gaps``, ``da_targets``, ``da_correlation``; the tables in
``experiments/domain_adaptation/README.md`` are generated from them by ``metalab tables``.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from metalab.report.collect import collect, t975
from metalab.report.records import append_record, repo_root
from metalab.report.study import load_study

STUDY = "experiments/domain_adaptation.yaml"
RECORD = "experiments/domain_adaptation/records/summary.jsonl"
KEY = re.compile(r"test/r(?P<angle>-?[\d.]+)_k(?P<k>\d+)/(?P<what>acc|mmd|pad)$")
SHOTS = (0, 1, 5, 10)
RESAMPLES = 10_000

# run label -> (shown name, does it use labelled target images)
METHODS = {
    "scratch": "scratch (k-shot target only)",
    "source_only": "source-only",
    "finetune_head": "fine-tune head",
    "finetune_all": "fine-tune all",
    "coral_unlabelled": "CORAL, unlabelled target only",
    "coral": "CORAL + k-shot labels",
    "maml": "MAML (meta-learned init)",
    "reptile": "Reptile (meta-learned init)",
}
K_FREE = ("source_only", "coral_unlabelled")  # use no labelled target image: one value, shown under k = 0

Figures = dict[tuple[float, int, str], float]  # (angle, k, acc|mmd|pad) -> value


def load(budget: str) -> tuple[dict[str, dict[int, Figures]], Any]:
    """``{label: {seed: {(angle, k, what): value}}}`` from the study's current (non-stale) records."""
    study = load_study(repo_root() / STUDY, budget)
    collected = collect(study)
    runs: dict[str, dict[int, Figures]] = {}
    for label, records in collected.records.items():
        for record in records:
            figures = {}
            for key, value in record.metrics.items():
                match = KEY.match(key)
                if match:
                    figures[(float(match["angle"]), int(match["k"]), match["what"])] = value
            runs.setdefault(label, {})[record.run.seed] = figures
    return runs, collected


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95% t half-width (nan with one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def shown(values: list[float]) -> str:
    mean, half = interval(values)
    return f"{mean:.2f} ± {half:.2f}" if math.isfinite(half) else f"{mean:.2f}"


def angles_of(runs: dict[str, dict[int, Figures]]) -> list[float]:
    return sorted({a for seeds in runs.values() for f in seeds.values() for (a, _, w) in f if w == "acc"})


def mean_over_targets(figures: Figures, k: int, angles: list[float]) -> float | None:
    values = [figures.get((a, k, "acc")) for a in angles]
    return statistics.mean(values) if values and None not in values else None


def per_seed(runs: dict[str, dict[int, Figures]], label: str, k: int, angles: list[float]) -> dict[int, float]:
    """Each seed's accuracy at ``k`` averaged over the targets (k-free methods: their k = 0 value)."""
    k = 0 if label in K_FREE else k
    out = {}
    for seed, figures in runs.get(label, {}).items():
        value = mean_over_targets(figures, k, angles)
        if value is not None:
            out[seed] = value
    return out


def kshot_rows(runs: dict[str, dict[int, Figures]], angles: list[float]) -> list[dict[str, Any]]:
    rows = []
    for label, name in METHODS.items():
        row: dict[str, Any] = {"method": name, "seeds": len(runs.get(label, {}))}
        for k in SHOTS:
            if (label in K_FREE) != (k == 0):
                row[f"k={k}"] = ""
                continue
            values = list(per_seed(runs, label, k, angles).values())
            row[f"k={k}"] = shown(values) if values else "not run"
        rows.append(row)
    return rows


def gap(runs, a: str, b: str, k: int, angles: list[float]) -> dict[str, Any] | None:
    """``a - b`` per seed (both averaged over the targets), mean and t-interval over the seeds both have."""
    left, right = per_seed(runs, a, k, angles), per_seed(runs, b, k, angles)
    seeds = sorted(left.keys() & right.keys())
    if not seeds:
        return None
    diffs = [left[s] - right[s] for s in seeds]
    mean, half = interval(diffs)
    ka, kb = (0 if a in K_FREE else k), (0 if b in K_FREE else k)
    pairs = [  # the secondary view: every (seed, target) pair, as if the targets were independent draws
        runs[a][s][(t, ka, "acc")] - runs[b][s][(t, kb, "acc")]
        for s in seeds
        for t in angles
        if (t, ka, "acc") in runs[a][s] and (t, kb, "acc") in runs[b][s]
    ]
    pair_mean, pair_half = interval(pairs)
    return {
        "comparison": f"{METHODS[a]} - {METHODS[b]}",
        "k": k,
        "gap": round(mean, 2),
        "ci95": round(half, 2),
        "per_seed": ", ".join(f"{d:+.2f}" for d in diffs),
        "above (CI excludes 0)": bool(len(diffs) > 1 and mean - half > 0),
        "pairs": len(pairs),
        "pairs_ci95": round(pair_half, 2),
        "pairs_above": f"{sum(d > 0 for d in pairs)}/{len(pairs)}",
    }


def gap_rows(runs: dict[str, dict[int, Figures]], angles: list[float]) -> list[dict[str, Any]]:
    rows = []
    for label in METHODS:
        if label == "scratch" or label not in runs:
            continue
        for k in (1, 5, 10):
            found = gap(runs, label, "scratch", k, angles)
            rows += [found] if found else []
    for a, b, ks in (("coral_unlabelled", "source_only", (0,)), ("coral", "finetune_all", (1, 5, 10))):
        for k in ks:
            found = gap(runs, a, b, k, angles)
            rows += [found] if found else []
    return rows


def per_target(runs: dict[str, dict[int, Figures]], label: str, angle: float, k: int, what: str = "acc") -> float:
    values = [f[(angle, k, what)] for f in runs.get(label, {}).values() if (angle, k, what) in f]
    return statistics.mean(values) if values else float("nan")


def nearest_source_gap(angle: float, sources: list[float]) -> float:
    """Degrees to the nearest source rotation, on the circle."""
    return min(abs((angle - s + 180) % 360 - 180) for s in sources)


def target_rows(runs: dict[str, dict[int, Figures]], angles: list[float], sources: list[float]) -> list[dict[str, Any]]:
    rows = []
    for angle in angles:
        row: dict[str, Any] = {
            "target": f"{angle:g}°",
            "nearest_source": nearest_source_gap(angle, sources),
            "mmd": per_target(runs, "source_only", angle, 0, "mmd"),
            "pad": per_target(runs, "source_only", angle, 0, "pad"),
            "source_only": per_target(runs, "source_only", angle, 0),
            "coral_unlabelled": per_target(runs, "coral_unlabelled", angle, 0),
        }
        for k in (1, 5, 10):
            row[f"scratch_k{k}"] = per_target(runs, "scratch", angle, k)
            row[f"finetune_all_k{k}"] = per_target(runs, "finetune_all", angle, k)
            row[f"transfer_gain_k{k}"] = row[f"finetune_all_k{k}"] - row[f"scratch_k{k}"]
        rows.append({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()})
    return rows


def spearman_with_ci(x: list[float], y: list[float], seed: int = 0) -> tuple[float, float, float, int]:
    """Spearman's rho over the targets and its 95% percentile bootstrap interval (targets resampled; resamples
    with fewer than 3 distinct targets or a constant side are skipped, and their number is returned).

    Each resample's rho is the Pearson correlation of its average ranks (ties share a rank), as
    ``scipy.stats.spearmanr`` computes it, for all resamples at once."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = float(spearmanr(x_arr, y_arr).statistic)
    picks = np.random.default_rng(seed).integers(0, len(x_arr), (RESAMPLES, len(x_arr)))
    xs, ys = x_arr[picks], y_arr[picks]
    distinct = np.array([len(set(row)) for row in picks.tolist()])
    keep = (distinct >= 3) & (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    rx, ry = rankdata(xs[keep], axis=1), rankdata(ys[keep], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    draws = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    low, high = np.percentile(draws, [2.5, 97.5])
    return rho, float(low), float(high), int((~keep).sum())


def correlation_rows(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    distances = {"linear MMD": "mmd", "proxy A-distance": "pad", "degrees to nearest source": "nearest_source"}
    transfers = {
        "source-only accuracy": "source_only",
        "CORAL (unlabelled) gain over source-only": None,
        **{f"fine-tune all - scratch, k={k}": f"transfer_gain_k{k}" for k in (1, 5, 10)},
    }
    rows = []
    for d_name, d_key in distances.items():
        for t_name, t_key in transfers.items():
            x = [row[d_key] for row in targets]
            y = [(row["coral_unlabelled"] - row["source_only"]) if t_key is None else row[t_key] for row in targets]
            if any(not math.isfinite(v) for v in x + y):
                continue
            rho, low, high, skipped = spearman_with_ci(x, y)
            rows.append(
                {
                    "distance": d_name,
                    "transfer": t_name,
                    "targets": len(x),
                    "spearman": round(rho, 3),
                    "ci95_low": round(low, 3),
                    "ci95_high": round(high, 3),
                    "CI excludes 0": bool(high < 0 or low > 0),
                    "skipped_resamples": skipped,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    runs, collected = load(args.budget)
    if not runs:
        raise SystemExit(f"error: no current run records for {STUDY} budget {args.budget}; run metalab report first")
    angles = angles_of(runs)
    sources = [float(a) for a in (0, 15, 30, 45)]
    kshot, gaps = kshot_rows(runs, angles), gap_rows(runs, angles)
    targets = target_rows(runs, angles, sources)
    correlations = correlation_rows(targets)
    for title, rows in (("k-shot", kshot), ("gaps", gaps), ("targets", targets), ("correlation", correlations)):
        print(f"\n## {title}")
        for row in rows:
            print("  " + " | ".join(f"{k}={v}" for k, v in row.items()))
    missing = [f"{r.label} seed {r.seed}" for r in collected.missing]
    stale = [f"{r.label} seed {r.seed}" for r in collected.stale]
    if missing or stale:
        print(f"\nleft out: missing {missing or 'none'}; stale {stale or 'none'}")
    if args.no_record:
        return
    settings = {"study": STUDY, "budget": args.budget, "targets": [f"{a:g}" for a in angles], "missing": missing}
    append_record(RECORD, kshot, benchmark="da_kshot", settings=settings)
    append_record(RECORD, gaps, benchmark="da_gaps", settings=settings)
    append_record(RECORD, targets, benchmark="da_targets", settings=settings)
    append_record(RECORD, correlations, benchmark="da_correlation", settings={**settings, "resamples": RESAMPLES})


if __name__ == "__main__":
    main()
