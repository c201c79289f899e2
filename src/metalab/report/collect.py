"""Read a study's run records and reduce them to what the report shows: means with 95% confidence
intervals, targets met or not, ordering checks, curves and accuracy matrices. Plain data, no Markdown."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalab.report.study import Run, Study, current_targets, is_stale

SCORES = ("acc", "mse")  # the headline score of a test: higher-better accuracy, lower-better MSE
EXTRA_SCORES = ("forgetting", "bwt", "fwt")
# Two-sided 95% Student t quantiles for 1..30 degrees of freedom (then the normal 1.96 is within 2%).
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(degrees_of_freedom: int) -> float:
    return T975[degrees_of_freedom - 1] if degrees_of_freedom <= len(T975) else 1.96


@dataclass
class RunRecord:
    run: Run
    folder: Path
    metrics: dict[str, float]
    targets: dict[str, Any]
    info: dict[str, Any]
    steps: int | None
    stale: bool = False  # made by a config other than the study's now (shown only when kept on purpose)
    healed: list[str] = field(default_factory=list)  # what the self-diagnosis did to its training (healed_actions)


def healed_actions(alerts: Any) -> list[str]:
    """The alerts of a record (``metrics.json``'s ``alerts``) whose action changed training: a skipped batch, a
    rollback, a lowered rate, an early stop. A report alone (``changed_training: false``: a throughput collapse
    or a forgetting jump, for which no remedy is known) does not count. The fingerprint leaves the diagnosis
    settings out (:mod:`metalab.report.identity`) because a run without any such action is the run without
    diagnosis; a run with one is marked healed wherever its results are shown."""
    if not isinstance(alerts, list):
        return []
    return [
        f"step {a.get('step')}: {a.get('kind')} -> {a.get('action')}"
        for a in alerts
        if isinstance(a, dict) and a.get("changed_training", True) is not False
    ]


@dataclass
class Estimate:
    """A score over seeds (mean and t-interval) or, with one seed, over that run's test episodes."""

    mean: float
    ci95: float | None
    over: str
    values: list[float]


@dataclass
class Row:
    label: str
    test: str  # e.g. 5w1s, class_il
    score: str  # acc or mse
    estimate: Estimate
    paper: Any
    goal: Any
    source: str
    met: str  # "met", "not met" or "no goal"
    extras: dict[str, Estimate] = field(default_factory=dict)
    stale: bool = False  # some of its records were made by another config (kept on request)
    healed: list[int] = field(default_factory=list)  # seeds whose training the self-diagnosis changed

    @property
    def shown_label(self) -> str:
        label = f"{self.label} (STALE: made by another config)" if self.stale else self.label
        if self.healed:
            seeds = ", ".join(str(s) for s in self.healed)
            label += f" (HEALED: the diagnosis acted in training, seed {seeds}; see Diagnosis alerts)"
        return label


@dataclass
class Collected:
    records: dict[str, list[RunRecord]]  # label -> its runs that have records, in seed order
    missing: list[Run]  # planned runs without a record yet
    errors: list[str]  # unreadable records, one message each
    stale: list[Run] = field(default_factory=list)  # recorded by a config other than the study's now


def collect(study: Study, keep_stale: bool = False) -> Collected:
    """Every planned run's record from the study folder; unreadable ones are reported, not fatal. A stale
    record (made by another config than the run has now) is left out and listed, or with ``keep_stale``
    kept and marked."""
    records: dict[str, list[RunRecord]] = {label: [] for label in study.labels}
    missing, errors, stale = [], [], []
    for run in study.runs:
        folder = study.records_dir(run)
        if not (folder / "metrics.json").is_file():
            missing.append(run)
            continue
        run_is_stale = is_stale(study, run, folder)
        if run_is_stale:
            stale.append(run)
            if not keep_stale:
                continue
        try:
            data = json.loads((folder / "metrics.json").read_text())
            if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                raise ValueError("no 'metrics' mapping")
            info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        except (OSError, ValueError) as error:
            shown = _relative(folder / "metrics.json", study.root)
            errors.append(
                f"{shown} is unreadable ({error}); the report leaves out {run.label} seed {run.seed}; "
                f"delete {_relative(folder, study.root)} (and its run folder) to run it again"
            )
            continue
        metrics = {k: float(v) for k, v in data["metrics"].items() if isinstance(v, (int, float))}
        healed = healed_actions(data.get("alerts"))
        records[run.label].append(
            RunRecord(
                run,
                folder,
                metrics,
                current_targets(study, run, data.get("targets") or {}),
                info,
                data.get("global_step"),
                run_is_stale,
                healed,
            )
        )
    return Collected(records, missing, errors, stale)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def estimate(runs: list[RunRecord], key: str) -> Estimate | None:
    values = [r.metrics[key] for r in runs if key in r.metrics and math.isfinite(r.metrics[key])]
    if not values:
        return None
    if len(values) >= 2:
        mean = statistics.mean(values)
        half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return Estimate(mean, half, f"{len(values)} seeds", values)
    only = next(r for r in runs if key in r.metrics)
    ci = only.metrics.get(f"{key}_ci95")
    episodes = only.metrics.get(key.rsplit("/", 1)[0] + "/episodes")
    over = f"{int(episodes)} episodes" if ci is not None and episodes else "1 seed"
    return Estimate(values[0], ci, f"{over} (seed {only.run.seed})", values)


def rows(collected: Collected) -> list[Row]:
    """One row per (run label, test, headline score), in the study's order."""
    out = []
    for label, runs in collected.records.items():
        if not runs:
            continue
        tests = sorted(
            {
                k.split("/")[1]
                for r in runs
                for k in r.metrics
                if k.startswith("test/") and k.count("/") == 2 and k.rsplit("/", 1)[1] in SCORES
            }
        )
        for test in tests:
            for score in SCORES:
                found = estimate(runs, f"test/{test}/{score}")
                if found is None:
                    continue
                target = runs[0].targets.get(test) if isinstance(runs[0].targets.get(test), dict) else {}
                extras = {name: e for name in EXTRA_SCORES if (e := estimate(runs, f"test/{test}/{name}"))}
                out.append(
                    Row(
                        label,
                        test,
                        score,
                        found,
                        target.get("paper"),
                        target.get("goal"),
                        str(target.get("source", "")),
                        verdict(found.mean, target.get("goal"), score),
                        extras,
                        any(r.stale for r in runs),
                        [r.run.seed for r in runs if r.healed],
                    )
                )
    return out


def verdict(mean: float, goal: Any, score: str) -> str:
    """``met`` when the mean reaches the goal (accuracy at least, MSE at most), computed, never typed."""
    if not isinstance(goal, (int, float)):
        return "no goal"
    reached = mean >= goal if score == "acc" else mean <= goal
    return "met" if reached else "not met"


def checks(study: Study, collected: Collected) -> list[tuple[str, str, str]]:
    """The study's ``compare:`` checks on the means: (description, detail, verified / NOT verified / not run).

    ``{order: [a, b, c], metric: test/class_il/acc}``: the means strictly decrease along the list;
    ``{each: a, metric: test/task_il/forgetting, at_most: 0}``: every seed of ``a`` is at most the value.
    """
    out = []
    for check in study.compare:
        metric, name = check["metric"], check.get("name") or str(check)
        if "order" in check:
            means = [estimate(collected.records.get(label, []), metric) for label in check["order"]]
            if any(m is None for m in means):
                out.append((name, "some runs have no record yet", "not run"))
                continue
            values = [m.mean for m in means]  # type: ignore[union-attr]
            ok = all(a > b for a, b in zip(values, values[1:]))
            out.append((name, " > ".join(f"{v:.2f}" for v in values), "verified" if ok else "NOT verified"))
        elif "each" in check:
            found = estimate(collected.records.get(check["each"], []), metric)
            if found is None:
                out.append((name, "no record yet", "not run"))
                continue
            ok = all(v <= float(check["at_most"]) for v in found.values)
            out.append((name, ", ".join(f"{v:.2f}" for v in found.values), "verified" if ok else "NOT verified"))
    return out


def read_curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value)]}`` from a run's ``metrics.csv``; a step logged twice (a resumed run
    repeats the steps after its last checkpoint) keeps its last value."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return {}
    series: dict[str, dict[int, float]] = {}
    with path.open() as handle:
        for line in csv.DictReader(handle):
            step = line.get("step")
            if not step:
                continue
            for column, value in line.items():
                if column in ("step", "epoch") or not value:
                    continue
                try:
                    series.setdefault(column, {})[int(float(step))] = float(value)
                except ValueError:
                    continue
    return {column: sorted(points.items()) for column, points in series.items()}


def accuracy_matrix(runs: list[RunRecord], scenario: str) -> list[list[float]] | None:
    """Mean over seeds of ``R[i][j]`` (accuracy on task j after training task i) from ``R/<scenario>/i_j``."""
    cells: dict[tuple[int, int], list[float]] = {}
    for run in runs:
        for key, value in run.metrics.items():
            if key.startswith(f"R/{scenario}/"):
                i, j = key.rsplit("/", 1)[1].split("_")
                cells.setdefault((int(i), int(j)), []).append(value)
    if not cells:
        return None
    size = max(max(i, j) for i, j in cells) + 1
    return [[statistics.mean(cells.get((i, j), [math.nan])) for j in range(size)] for i in range(size)]
