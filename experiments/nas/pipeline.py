"""Issue 17's NAS study, one run at a time: searches, then retraining of every chosen cell over seeds.

    python experiments/nas/pipeline.py run          # runs what has not run yet (each is `python train.py ...`)
    python experiments/nas/pipeline.py summarise    # the retraining table's rows from the run records
    python experiments/nas/pipeline.py searches --search-seed 1   # extra search seeds, no retraining
    python experiments/nas/pipeline.py retrain --runs evolution_search1 --seeds 0   # retrain what a search chose
    python experiments/nas/pipeline.py independent --budget small --search-seeds 0 1 2   # searches x methods
    python experiments/nas/pipeline.py summarise-independent --budget small   # mean and 95% CI over searches

``independent`` treats the search seed as a dimension: each method (and the ResNet cell, which has no
search) runs one search per seed and retrains the chosen cell once, with the retraining seed equal to the
search seed, so each seed is one independent replicate of the whole method (search + retraining).
``summarise-independent`` gives per method the mean test accuracy over those replicates with a 95%
Student-t interval (``metalab.report.collect.t975``). ``--budget`` names a row of ``BUDGETS``: ``readme``
is the configs as they are; ``small`` is a smaller budget, the same for every method, for a shared core.

Every finished run appends a record (``append_record``) to ``experiments/nas/records/runs.jsonl`` with the
figures of its ``metrics.json``; ``summarise`` appends mean +- std over seeds per cell, the search cost and
the relative error reduction against the hand-designed ResNet cell to ``experiments/nas/records/summary.jsonl``.
``experiments/nas/README.md`` shows both through generated tables (``python -m metalab tables``).
Runs go to ``logs/nas/<name>`` (one thread each, in sequence: the machine is a shared 2-core CPU); a run
directory holding a ``metrics.json`` is not run again, so the script picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from metalab.nas.plot import draw_cell
from metalab.nas.space import RESNET_CELL, Genotype
from metalab.report.collect import t975
from metalab.report.records import append_record, read_records, repo_root

ROOT = repo_root()
RUNS = ROOT / "logs" / "nas"
RUN_RECORDS = "experiments/nas/records/runs.jsonl"
SUMMARY_RECORDS = "experiments/nas/records/summary.jsonl"
SEARCHES = {
    "darts": "nas/darts",
    "darts_noguard": "nas/darts_noguard",
    "evolution": "nas/evolution",
    "random": "nas/random",
}
SEEDS = (0, 1, 2)
# cells retrained over every seed; darts_noguard only on seed 0 (the guard comparison)
TABLE_CELLS = ("darts", "evolution", "random", "resnet")
INDEPENDENT_RECORDS = "experiments/nas/records/independent.jsonl"
METHODS = ("darts", "evolution", "random")
# Extra overrides per budget and run kind (searches by method, "retrain" for every retraining, the ResNet
# cell's included). `small`: half the DARTS epochs (3 x 15 steps), 16 evaluations of a 20-step fitness for
# evolution (8 random cells + 2 generations of 4 children) and random search (4 generations of 4), and 2
# retraining epochs instead of 4.
BUDGETS: dict[str, dict[str, list[str]]] = {
    "readme": {"darts": [], "evolution": [], "random": [], "retrain": []},
    "small": {
        "darts": ["trainer.max_epochs=3"],
        "evolution": ["model.steps=20", "trainer.max_steps=3"],
        "random": ["model.steps=20", "trainer.max_steps=4"],
        "retrain": ["trainer.max_epochs=2"],
    },
}


def run_train(
    name: str, overrides: list[str], records: str = RUN_RECORDS, settings: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """``python train.py <overrides>`` into ``logs/nas/<name>``; its metrics.json (None if it failed)."""
    out = RUNS / name
    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        if not _recorded(name, records):  # finished, but its record was never written (e.g. run by hand)
            _record_run(name, overrides, metrics, records, settings)
        return metrics
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():  # a run stopped part-way continues from its checkpoint (resume, as any run)
        overrides = [*overrides, f"ckpt_path={last.relative_to(ROOT)}"]
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={out.relative_to(ROOT)}"]
    print(f"[nas pipeline] {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0 or not (out / "metrics.json").is_file():
        print(f"[nas pipeline] {name} failed (exit {result.returncode})", flush=True)
        return None
    record = json.loads((out / "metrics.json").read_text())
    _record_run(name, overrides, record, records, settings)
    return record


def _recorded(name: str, records: str) -> bool:
    path = ROOT / records
    return path.is_file() and any(rec.get("settings", {}).get("run") == name for rec in read_records(path))


def _record_run(
    name: str,
    overrides: list[str],
    metrics: dict[str, Any],
    records: str = RUN_RECORDS,
    settings: dict[str, Any] | None = None,
) -> None:
    scalars = metrics["metrics"]
    row = {
        "run": name,
        "genotype": metrics.get("genotype"),
        "seed": metrics.get("seed"),
        "wall_seconds": round(scalars.get("train/wall_seconds", float("nan")), 1),
    }
    if "search_cpu_seconds" in metrics:
        row["search_cpu_minutes"] = round(metrics["search_cpu_seconds"] / 60, 2)
    if "supernet_epoch_seconds" in metrics:
        row["supernet_epoch_seconds"] = round(statistics.mean(metrics["supernet_epoch_seconds"]), 1)
        row["derived_skips"] = Genotype.parse(metrics["genotype"]).count("skip_connect")
        row["search_val_acc"] = round(100 * scalars.get("val/acc_epoch", float("nan")), 2)
    if "evaluations" in metrics:
        row["evaluations"] = len(metrics["evaluations"])
        trained = [e["seconds"] for e in metrics["evaluations"] if e["seconds"] > 0.05]
        row["seconds_per_trained_cell"] = round(statistics.mean(trained), 1) if trained else None
        row["best_fitness"] = metrics.get("best_fitness")
    if "test/cifar10/acc" in scalars:
        row["test_acc"] = round(scalars["test/cifar10/acc"], 2)
        row["parameters"] = metrics.get("parameters")
        row["train_cpu_minutes"] = round(metrics.get("train_cpu_seconds", float("nan")) / 60, 2)
    command = "python train.py " + " ".join(_quoted(o) for o in overrides)
    kind = "retrain" if name.startswith("retrain_") else "search"
    cell = name.removeprefix("retrain_").rsplit("_seed", 1)[0].split("_search")[0]
    settings = settings or {"kind": kind, "cell": cell}
    append_record(
        records,
        row,
        benchmark="nas_run",
        command=command,
        settings={"run": name, **settings, "overrides": overrides},
        notes="one thread per run, runs in sequence; other sessions' processes shared the 2 cores",
    )


def _quoted(override: str) -> str:
    """An override as typed in a shell (the genotype's quotes kept inside double quotes)."""
    return f'"{override}"' if "|" in override else override


def retrain_value(genotype: str) -> str:
    return f"'{genotype}'"  # Hydra's grammar needs the | ~ + of the string form quoted


def run_all(seed: int = 0) -> None:
    genotypes = {"resnet": str(RESNET_CELL)}
    order = ["darts", "evolution", "random", "darts_noguard"]
    for name in order:
        metrics = run_train(name, [f"+experiment={SEARCHES[name]}", f"seed={seed}"])
        if metrics is not None:
            genotypes[name] = metrics["genotype"]
    for retrain_seed in SEEDS:
        cells = TABLE_CELLS + (("darts_noguard",) if retrain_seed == 0 else ())
        for cell in cells:
            if cell not in genotypes:
                continue
            run_train(
                f"retrain_{cell}_seed{retrain_seed}",
                ["+experiment=nas/retrain", f"genotype={retrain_value(genotypes[cell])}", f"seed={retrain_seed}"],
            )


def run_searches_only(seed: int, names: list[str]) -> None:
    """Extra search seeds (no retraining): does a searcher's best fitness at this budget depend on the seed?"""
    for name in names:
        run_train(f"{name}_search{seed}", [f"+experiment={SEARCHES[name]}", f"seed={seed}"])


def retrain_found(names: list[str], seeds: list[int]) -> None:
    """Retrain the cells that finished searches (``logs/nas/<name>/metrics.json``) chose, over ``seeds``."""
    for name in names:
        found = RUNS / name / "metrics.json"
        if not found.is_file():
            print(f"[nas pipeline] {name}: no finished search in {found.relative_to(ROOT)}; skipped", flush=True)
            continue
        genotype = json.loads(found.read_text())["genotype"]
        for seed in seeds:
            run_train(
                f"retrain_{name}_seed{seed}",
                ["+experiment=nas/retrain", f"genotype={retrain_value(genotype)}", f"seed={seed}"],
            )


def run_independent(budget: str, methods: list[str], search_seeds: list[int], retrain: bool = True) -> None:
    """Per search seed and method: the search, then one retraining of its cell with the same seed.

    The ResNet cell (``resnet`` in ``methods``) has no search: it is retrained on the same seeds as the
    baseline. Seeds are the outer loop, so an interrupted pipeline leaves whole replicates."""
    extra = BUDGETS[budget]
    for seed in search_seeds:
        for method in methods:
            base = {"budget": budget, "method": method, "search_seed": seed}
            if method == "resnet":
                genotype = str(RESNET_CELL)
            else:
                found = run_train(
                    f"{budget}_{method}_search{seed}",
                    [f"+experiment={SEARCHES[method]}", f"seed={seed}", *extra[method]],
                    INDEPENDENT_RECORDS,
                    {**base, "kind": "search"},
                )
                if found is None:
                    continue
                genotype = found["genotype"]
            if not retrain:
                continue
            run_train(
                f"{budget}_retrain_{method}_search{seed}_seed{seed}",
                ["+experiment=nas/retrain", f"genotype={retrain_value(genotype)}", f"seed={seed}", *extra["retrain"]],
                INDEPENDENT_RECORDS,
                {**base, "kind": "retrain", "retrain_seed": seed},
            )


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its two-sided 95% Student-t interval (None below two values)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    return mean, t975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def independent_table(rows: list[dict[str, Any]], settings: list[dict[str, Any]], budget: str) -> list[dict[str, Any]]:
    """Per method: test accuracy mean and 95% CI over independent searches, search cost, distinct cells."""
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row, setting in zip(rows, settings):  # a rerun's newer record replaces the older one
        if setting.get("budget") == budget:
            latest[(setting["method"], setting["kind"], setting["search_seed"])] = row
    table = []
    for method in (*METHODS, "resnet"):
        seeds = sorted(s for (m, kind, s) in latest if m == method and kind == "retrain")
        if not seeds:
            continue
        accs = [latest[(method, "retrain", s)]["test_acc"] for s in seeds]
        mean, ci = mean_ci95(accs)
        searches = [latest[(method, "search", s)] for s in seeds if (method, "search", s) in latest]
        cost = [r["search_cpu_minutes"] for r in searches if r.get("search_cpu_minutes") is not None]
        no_search_cost = 0.0 if method == "resnet" else None
        table.append(
            {
                "method": method,
                "budget": budget,
                "searches": len(searches),
                "search_seeds": seeds,
                "test_acc_mean": round(mean, 2),
                "test_acc_ci95": None if ci is None else round(ci, 2),
                "test_acc_values": [round(a, 2) for a in accs],
                "distinct_cells": len({latest[(method, "retrain", s)]["genotype"] for s in seeds}),
                "search_cpu_minutes_mean": round(statistics.mean(cost), 2) if cost else no_search_cost,
            }
        )
    return table


def summarise_independent(budget: str) -> None:
    records = read_records(ROOT / INDEPENDENT_RECORDS)
    rows = [rec["figures"][0] for rec in records]
    table = independent_table(rows, [rec["settings"] for rec in records], budget)
    append_record(
        SUMMARY_RECORDS,
        table,
        benchmark="nas_independent_searches",
        settings={
            "budget": budget,
            "budget_overrides": BUDGETS[budget],
            "runs_file": INDEPENDENT_RECORDS,
            "replicate": "one search per seed, its cell retrained once with the same seed",
        },
    )
    for row in table:
        print(row)


def summarise() -> None:
    """Per cell: test accuracy mean +- std over seeds, parameters, search cost; error reduction vs ResNet."""
    rows = [r for rec in read_records(ROOT / RUN_RECORDS) for r in rec["figures"]]
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:  # a rerun's newer record replaces the older one
        latest[row["run"]] = row
    searches = {name: latest.get(name, {}) for name in SEARCHES}
    table = []
    for cell in TABLE_CELLS + ("darts_noguard",):
        accs = [latest[f"retrain_{cell}_seed{s}"]["test_acc"] for s in SEEDS if f"retrain_{cell}_seed{s}" in latest]
        if not accs:
            continue
        any_run = next(latest[f"retrain_{cell}_seed{s}"] for s in SEEDS if f"retrain_{cell}_seed{s}" in latest)
        table.append(
            {
                "cell": cell,
                "genotype": any_run["genotype"],
                "seeds": len(accs),
                "test_acc_mean": round(statistics.mean(accs), 2),
                "test_acc_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else None,
                "parameters": any_run["parameters"],
                "search_cpu_minutes": searches.get(cell, {}).get(
                    "search_cpu_minutes", 0.0 if cell == "resnet" else None
                ),
            }
        )
    reference = next((r for r in table if r["cell"] == "resnet"), None)
    for row in table:
        if reference is not None:
            error, reference_error = 100 - row["test_acc_mean"], 100 - reference["test_acc_mean"]
            row["error_reduction_vs_resnet_pct"] = round(100 * (reference_error - error) / reference_error, 1)
    _draw_cell_pictures(latest)
    append_record(
        SUMMARY_RECORDS, table, benchmark="nas_retrain_table", settings={"seeds": list(SEEDS), "runs_file": RUN_RECORDS}
    )
    for row in table:
        print(row)


def _draw_cell_pictures(latest: dict[str, dict[str, Any]]) -> None:
    """A picture of each searched cell and of the ResNet cell in ``experiments/nas/cells/<name>.png``
    (drawn from the recorded genotypes, the same picture the runs write as ``cell.png``)."""
    target = ROOT / "experiments" / "nas" / "cells"
    genotypes = {name: latest[name]["genotype"] for name in SEARCHES if name in latest} | {"resnet": str(RESNET_CELL)}
    for name, genotype in genotypes.items():
        draw_cell(Genotype.parse(genotype), target / f"{name}.png", f"{name}\n{genotype}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "action", choices=("run", "searches", "retrain", "summarise", "independent", "summarise-independent")
    )
    parser.add_argument(
        "--budget", choices=list(BUDGETS), default="readme", help="with `independent` and `summarise-independent`"
    )
    parser.add_argument(
        "--methods", nargs="+", default=[*METHODS, "resnet"], choices=[*METHODS, "resnet"], help="with `independent`"
    )
    parser.add_argument("--search-seeds", nargs="+", type=int, default=[0, 1, 2], help="with `independent`")
    parser.add_argument("--no-retrain", action="store_true", help="with `independent`: searches only")
    parser.add_argument("--runs", nargs="+", default=[], help="with `retrain`: search runs whose cells to retrain")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="with `retrain`: retraining seeds")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument(
        "--searches",
        nargs="+",
        default=["evolution", "random"],
        choices=list(SEARCHES),
        help="with `searches`: which searches to run at --search-seed",
    )
    args = parser.parse_args()
    if args.action == "run":
        run_all(args.search_seed)
    elif args.action == "retrain":
        retrain_found(args.runs, args.seeds)
    elif args.action == "searches":
        run_searches_only(args.search_seed, args.searches)
    elif args.action == "independent":
        run_independent(args.budget, args.methods, args.search_seeds, retrain=not args.no_retrain)
    elif args.action == "summarise-independent":
        summarise_independent(args.budget)
    else:
        summarise()


if __name__ == "__main__":
    main()
