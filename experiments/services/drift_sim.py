"""Model registry: injected shifts of known size flagged at the right level, the false-alarm rate without
shift, and a rollback that restores the named version's metrics.

Levels. A reference of N(0, 1) inputs against recent inputs of N(shift, scale^2). The true level of each
scenario comes from its population drift score, computed exactly: KS distance sup |F - G| on a fine grid
of the two normal CDFs, PSI from the exact probabilities of the reference's deciles, score = max(D,
1 - exp(-PSI)), then the 0.1 / 0.2 thresholds. Each scenario is drawn ``--streams`` times (2,000 values
on each side) through ``metalab.services.registry.drift_report``; we report how often the level is right.

False alarms. Streams with no shift at several sample sizes: the share flagged warning or critical
against the nominal alpha = 0.05.

Rollback. Through the service on a SQLite store: v1 (accuracy 0.91) serves, v2 (0.84) is promoted, a
drift check on the shifted traffic v2 was promoted into is critical, the operator rolls back to v1; served
accuracy (Bernoulli draws at the active version's true accuracy, 500 requests per batch) is recorded per
batch, and the registry's active metrics after the rollback are compared with v1's.

Usage: python experiments/services/drift_sim.py [--streams 200]
"""

from __future__ import annotations

import argparse
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _record import HERE  # noqa: E402
from scipy import stats  # noqa: E402

from metalab.report.records import append_record  # noqa: E402
from metalab.services.registry import DriftConfig, ModelRegistryService, drift_report  # noqa: E402
from metalab.services.store import create_store_engine, migrate, session_factory  # noqa: E402
from metalab.services.store.models import Workspace  # noqa: E402

SCENARIOS = {
    "no shift": (0.0, 1.0),
    "mean +0.1 sd": (0.1, 1.0),
    "mean +0.35 sd": (0.35, 1.0),
    "mean +0.6 sd": (0.6, 1.0),
    "mean +1 sd": (1.0, 1.0),
    "sd x1.25": (0.0, 1.25),
    "sd x1.8": (0.0, 1.8),
}


def true_level(shift: float, scale: float, config: DriftConfig) -> tuple[float, str]:
    grid = np.linspace(-12, 12, 200_001)
    ks = float(np.max(np.abs(stats.norm.cdf(grid) - stats.norm.cdf(grid, shift, scale))))
    edges = stats.norm.ppf(np.linspace(0, 1, config.bins + 1))
    p = np.diff(stats.norm.cdf(edges))
    q = np.diff(stats.norm.cdf(edges, shift, scale))
    psi = float(np.sum((q - p) * np.log(q / p)))
    score = max(ks, 1 - np.exp(-psi))
    level = "critical" if score >= config.critical else "warning" if score >= config.warning else "none"
    return float(score), level


def level_accuracy(streams: int, n: int, rng: np.random.Generator, config: DriftConfig) -> list[dict]:
    rows = []
    for name, (shift, scale) in SCENARIOS.items():
        score, level = true_level(shift, scale, config)
        found = [
            drift_report({"x": rng.normal(0, 1, n).tolist()}, {"x": rng.normal(shift, scale, n).tolist()}, config)
            for _ in range(streams)
        ]
        levels = [r.level for r in found]
        rows.append(
            {
                "scenario": name,
                "true_score": score,
                "true_level": level,
                "share_right_level": float(np.mean([x == level for x in levels])),
                "share_none": levels.count("none") / streams,
                "share_warning": levels.count("warning") / streams,
                "share_critical": levels.count("critical") / streams,
                "median_score": float(np.median([r.score for r in found])),
            }
        )
        print(rows[-1], flush=True)
    return rows


def false_alarms(streams: int, rng: np.random.Generator, config: DriftConfig) -> list[dict]:
    rows = []
    for n in (50, 200, 2000):
        alarms = sum(
            drift_report(
                {"x": rng.normal(0, 1, n).tolist(), "y": rng.exponential(1, n).tolist()},
                {"x": rng.normal(0, 1, n).tolist(), "y": rng.exponential(1, n).tolist()},
                config,
            ).level
            != "none"
            for _ in range(streams)
        )
        low, high = stats.binomtest(alarms, streams).proportion_ci(0.95, method="exact")
        rows.append(
            {
                "scenario": f"no shift, {n} values per side, 2 features",
                "false_alarm_rate": alarms / streams,
                "false_alarm_ci95_low": low,
                "false_alarm_ci95_high": high,
                "nominal": config.alpha,
            }
        )
        print(rows[-1], flush=True)
    return rows


def rollback_story(rng: np.random.Generator) -> tuple[dict, list[float], list[tuple[int, str]]]:
    engine = create_store_engine(f"sqlite:///{tempfile.mkdtemp(prefix='drift-')}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    true_accuracy = {"v1": 0.91, "v2": 0.84}
    served, events = [], []
    with sessions() as session:
        session.add(Workspace(name="ops"))
        session.flush()
        registry = ModelRegistryService(session, "ops")
        registry.register(
            "ranker", "v1", {"accuracy": 0.91}, "models/ranker/v1.ckpt", {"x": rng.normal(0, 1, 2000).tolist()}
        )
        for batch in range(30):
            if batch == 10:
                registry.register(
                    "ranker", "v2", {"accuracy": 0.84}, "models/ranker/v2.ckpt", {"x": rng.normal(0, 1, 2000).tolist()}
                )
                events.append((batch, "v2 promoted"))
            if batch == 15:
                report = registry.check_drift("ranker", {"x": rng.normal(0.8, 1, 2000).tolist()})
                events.append((batch, f"drift {report.level}: {report.recommendation}"))
            if batch == 16:
                registry.rollback("ranker", "v1", "critical drift and lower served accuracy")
                events.append((batch, "rollback to v1"))
            active = registry.active("ranker").version
            served.append(float(np.mean(rng.random(500) < true_accuracy[active])))
        session.commit()
        kinds = [e.kind for e in registry.events("ranker")]
        result = {
            "scenario": "rollback v2 -> v1",
            "active_after": registry.active("ranker").version,
            "active_metrics_after": registry.active("ranker").metrics["accuracy"],
            "v1_metrics": 0.91,
            "restored": registry.active("ranker").metrics == {"accuracy": 0.91},
            "served_accuracy_before_v2": float(np.mean(served[:10])),
            "served_accuracy_v2": float(np.mean(served[10:16])),
            "served_accuracy_after_rollback": float(np.mean(served[16:])),
            "events": ",".join(kinds),
        }
    return result, served, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--alarm-streams", type=int, default=1000)
    args = parser.parse_args()
    config, rng = DriftConfig(), np.random.default_rng(0)
    levels = level_accuracy(args.streams, 2000, rng, config)
    alarms = false_alarms(args.alarm_streams, rng, config)
    story, served, events = rollback_story(rng)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [r["scenario"] for r in levels]
    bottom = np.zeros(len(levels))
    for level, colour in [("none", "tab:green"), ("warning", "tab:orange"), ("critical", "tab:red")]:
        share = np.array([r[f"share_{level}"] for r in levels])
        left.bar(range(len(levels)), share, bottom=bottom, color=colour, label=level)
        bottom += share
    for i, r in enumerate(levels):
        left.text(i, 1.02, r["true_level"], ha="center", fontsize=7)
    left.set(
        xticks=range(len(levels)),
        ylim=(0, 1.12),
        ylabel=f"share of {args.streams} streams",
        title="level found (bars) vs true level (text above)",
    )
    left.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    left.legend(fontsize=8, loc="lower left")
    right.plot(range(len(served)), served, "o-")
    for batch, text in events:
        right.axvline(batch, color="gray", ls=":")
        right.text(batch + 0.2, min(served) + 0.005, text, rotation=90, fontsize=7, va="bottom")
    right.set(xlabel="batch of 500 requests", ylabel="served accuracy", title="rollback restores v1")
    figure.tight_layout()
    figure.savefig(HERE / "drift.png", dpi=110)
    append_record(
        "experiments/services/records/drift.jsonl",
        levels + alarms + [story],
        settings={
            "streams": args.streams,
            "values_per_side": 2000,
            "warning": config.warning,
            "critical": config.critical,
            "alpha": config.alpha,
            "figure": "drift.png",
        },
    )


if __name__ == "__main__":
    main()
