"""Accuracy against CPU-minutes of training, ours and learn2learn's, from ``maml_budget_vs_learn2learn.py``'s records.

Takes the newest run with two or more test marks (``--marks``) of each side and recipe (Adam's rate, schedule,
meta-batch) for the order asked, one line per side and recipe with its 95% intervals, and writes the figure
beside the records::

    python benchmarks/meta/plot_budget_curve.py --order second
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metalab.report.records import read_records

RECORDS = Path("benchmarks/meta/records/maml_budget_vs_learn2learn.jsonl")
OLD_RECORDS_TASKS = 32  # the meta-batch of the records written before --tasks existed (and its default)
PAPER = {"second": 98.7, "first": 98.3}  # Finn et al. 2017, Table 1: MAML and first-order MAML, Omniglot 5w1s


def curve_label(side: str, settings: dict) -> str:
    """``metalab, Adam 0.001 cosine, 32 tasks``: what tells two runs of one side apart."""
    tasks = settings.get("tasks") or OLD_RECORDS_TASKS
    return f"{side}, Adam {settings.get('meta_lr')} {settings.get('schedule')}, {tasks} tasks"


def newest_curves(records: list[dict], order: str) -> dict[str, list[dict]]:
    """side and recipe -> the figures of its newest marked run (one record per mark, in the order written)."""
    curves: dict[str, list[dict]] = {}
    commands: dict[str, str] = {}
    for record in records:
        figure = record["figures"][0]
        if len(record["settings"].get("marks") or []) < 2 or figure["order"] != order:
            continue  # a run tested once (a recipe probe) is a point of a table, not a curve
        side = curve_label(figure["side"], record["settings"])
        points = curves.get(side, [])
        # a run's marks come in increasing CPU time; another command or a smaller time starts a newer run
        if commands.get(side) != record["command"] or figure["train_cpu_min"] <= points[-1]["train_cpu_min"]:
            commands[side], curves[side] = record["command"], []
        curves[side].append(
            {**figure, "cpu": record["cpu"], "date": record["date"], "marks": record["settings"]["marks"]}
        )
    return curves


def plot(curves: dict[str, list[dict]], order: str, path: Path) -> Path:
    from matplotlib.figure import Figure  # a figure of its own: pyplot's global backend is left alone

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for side, points in sorted(curves.items()):
        x = [p["train_cpu_min"] for p in points]
        y = [p["test_acc"] for p in points]
        axes.errorbar(x, y, yerr=[p["test_ci95"] for p in points], marker="o", capsize=3, label=side)
    axes.set_xscale("log", base=2)
    marks = sorted({m for points in curves.values() for p in points for m in p["marks"]})  # the planned marks
    axes.set_xticks(marks, [f"{m:g}" for m in marks])
    axes.minorticks_off()
    axes.axhline(PAPER[order], color="grey", linestyle="--", linewidth=1)
    axes.annotate(
        f"paper {PAPER[order]} (Finn et al. 2017, 60k steps on a GPU)",
        (marks[0], PAPER[order]),
        textcoords="offset points",
        xytext=(0, -12),
        fontsize=8,
        color="grey",
    )
    axes.set_xlabel("training CPU-minutes (one core)")
    axes.set_ylabel("test accuracy % (1000 episodes, 95% CI)")
    cpu = next(iter(curves.values()))[0]["cpu"]
    axes.set_title(f"{order}-order MAML, Omniglot 5-way 1-shot ({cpu})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", choices=["first", "second"], default="second")
    args = parser.parse_args()
    curves = newest_curves(read_records(RECORDS), args.order)
    if not curves:
        raise SystemExit(f"error: {RECORDS} has no {args.order}-order run with --marks yet")
    print(plot(curves, args.order, RECORDS.parent.parent / "results" / f"maml_budget_curve_{args.order}.png"))


if __name__ == "__main__":
    main()
