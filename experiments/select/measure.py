"""Model selection (issue 35, item 2): successive halving against every candidate trained at the full budget.

    OMP_NUM_THREADS=1 taskset -c 0 python experiments/select/measure.py omniglot_fewshot --seeds 0 1 2
    OMP_NUM_THREADS=1 taskset -c 0 python experiments/select/measure.py split_mnist --seeds 0 1 2
    python -m metalab tables experiments/select/README.md

For each seed it runs, each in its own process (``python -m metalab select``, so both pay the same start-up):
``--hindsight`` (every candidate trained at the family's full budget, then tested) and the halving selection
(the family's pruner). A finished run (its ``selection.json`` exists) is not run again, so the script resumes.
Then it appends two records to ``experiments/select/records/select.jsonl``: the hindsight table (each
candidate's test metric, mean and 95% t-interval over the seeds, and its full-budget CPU seconds) and the
selection table (per seed: the choice, which rung eliminated whom, the selection's CPU seconds against the
hindsight run's training CPU seconds of the same seed, whether the choice is within the interval of the best
in hindsight and above the family's default) and, for a family whose runs resume, a third: synchronous halving,
Optuna's ASHA and Hyperband replayed on the hindsight curves (resource units, not CPU). Each run's
``selection.json`` and curves are copied beside the records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from metalab.report.collect import t975  # noqa: E402
from metalab.report.records import append_record  # noqa: E402
from metalab.sweeps.families import load_family  # noqa: E402
from metalab.sweeps.select import Outcome, plot_curves  # noqa: E402

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records" / "select.jsonl"


def run_dir(family: str, budget: str, seed: int, mode: str) -> Path:
    return ROOT / "logs" / "select" / family / f"{budget}_seed{seed}_{mode}"


def ensure_run(family: str, budget: str, seed: int, mode: str) -> dict:
    """The run's ``selection.json``, running ``metalab select`` first if it has not finished before."""
    out = run_dir(family, budget, seed, mode)
    if not (out / "selection.json").is_file():
        command = [sys.executable, "-m", "metalab", "select", family, "--budget", budget, "--seed", str(seed)]
        command += ["--out", str(out)] + (["--hindsight"] if mode == "hindsight" else [])
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    kept = HERE / "runs" / family / f"{budget}_seed{seed}_{mode}"
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "selection.json", kept / "selection.json")
    data = json.loads((out / "selection.json").read_text())
    outcome = Outcome.from_json(data)
    if not outcome.resource:  # records written before the field existed
        fidelity = load_family(family, ROOT / "conf").fidelity
        outcome.resource = fidelity.key + (f" / {fidelity.unit}" if fidelity.unit != 1 else "")
    plot_curves(outcome, kept / "curves.png")  # drawn again from the record, all alike
    return data


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% Student-t interval over seeds (0 for a single value)."""
    if len(values) < 2:
        return values[0], 0.0
    return statistics.fmean(values), t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def hindsight_rows(runs: list[dict], test_metric: str) -> tuple[list[dict], dict[str, tuple[float, float]]]:
    """Per candidate: the test metric over seeds (mean, interval), the objective at the full budget, CPU."""
    rows, scores = [], {}
    names = list(runs[0]["candidates"])
    for name in names:
        tests = [r["test"][name][test_metric] for r in runs if name in r.get("test", {})]
        full = str(runs[0]["budget"]["max_resource"])
        vals = [r["curves"][name][full] for r in runs if full in r["curves"].get(name, {})]
        cpus = [r["cpu_seconds"][name] for r in runs]
        failed = sum(name in r.get("failed", {}) for r in runs)
        row = {"candidate": name, "default": name == runs[0]["default"]}
        if tests:
            mean, ci = mean_ci(tests)
            scores[name] = (mean, ci)
            row.update(test_mean=round(mean, 2), test_ci95=round(ci, 2))
        row.update(
            val_at_full_mean=round(statistics.fmean(vals), 2) if vals else None,
            train_cpu_s_mean=round(statistics.fmean(cpus), 1),
            seeds=len(tests),
            failed_seeds=failed,
        )
        rows.append(row)
    best = max(scores, key=lambda n: scores[n][0])
    for row in rows:
        row["best_in_hindsight"] = row["candidate"] == best
    return rows, scores


def selection_rows(halving: list[dict], hindsight: list[dict], scores: dict[str, tuple[float, float]]) -> list[dict]:
    best = max(scores, key=lambda n: scores[n][0])
    default = halving[0]["default"]
    rows = []
    for run, full in zip(halving, hindsight, strict=True):
        choice = run["choice"]
        why = "; ".join(
            f"r{rung['resource']}: out {', '.join(rung['eliminated']) or 'none'}"
            + (f", failed {', '.join(rung['failed'])}" if rung.get("failed") else "")
            for rung in run["rungs"]
        )
        full_cpu = sum(full["cpu_seconds"].values())
        rows.append(
            {
                "seed": run["seed"],
                "choice": choice,
                "choice_test_mean": round(scores[choice][0], 2),
                "best": best,
                "best_test": f"{scores[best][0]:.2f} +- {scores[best][1]:.2f}",
                "within_best_ci": scores[choice][0] >= scores[best][0] - scores[best][1],
                "default_test": f"{scores[default][0]:.2f} +- {scores[default][1]:.2f}",
                "above_default": scores[choice][0] > scores[default][0],
                "select_cpu_s": round(run["total_cpu_seconds"], 1),
                "hindsight_train_cpu_s": round(full_cpu, 1),
                "cpu_ratio": round(run["total_cpu_seconds"] / full_cpu, 3),
                "eliminated": why,
            }
        )
    return rows


PRUNERS = ("synchronous_halving", "successive_halving", "hyperband")


class Replay:
    """A stage runner that reads a hindsight run's curves instead of training: a selection replayed on them
    makes the same decisions a real one makes on the same seed, because a run resumed at a rung continues
    exactly as the uninterrupted run (the halving records check it: their curves equal the hindsight ones).
    It counts resource units and estimates CPU as each candidate's full-budget CPU times the fraction trained."""

    def __init__(self, run: dict) -> None:
        self.curves = {n: {int(k): v for k, v in c.items()} for n, c in run["curves"].items()}
        self.full = run["budget"]["max_resource"]
        self.cpu_full, self.units = run["cpu_seconds"], {n: 0 for n in run["candidates"]}

    def advance(self, candidate, start: int, stop: int) -> dict[int, float]:
        self.units[candidate.name] += stop - start
        return {r: v for r, v in self.curves[candidate.name].items() if start < r <= stop}

    def test(self, candidate) -> dict[str, float]:
        return {}

    def cpu_fraction(self) -> float:
        spent = sum(self.cpu_full[n] * u / self.full for n, u in self.units.items())
        return spent / sum(self.cpu_full.values())


def replay_rows(family, hindsight: list[dict], halving: list[dict], scores: dict) -> list[dict]:
    """Synchronous halving, Optuna's SuccessiveHalvingPruner (ASHA) and HyperbandPruner replayed on the
    hindsight curves of each seed (resumable families only); the synchronous replay is checked against the
    real halving run of the seed (same choice and eliminations)."""
    from metalab.sweeps.select import make_pruner, select

    family_budget = family.budget(hindsight[0]["budget"]["name"])
    # the family's schedule, and (post hoc, chosen after seeing these curves) the first rung three times later
    later = dataclasses.replace(family_budget, min_resource=family_budget.min_resource * family_budget.reduction_factor)
    rows = []
    for full, real in zip(hindsight, halving, strict=True):
        for pruner, budget in [(p, family_budget) for p in PRUNERS] + [("synchronous_halving", later)]:
            replay = Replay(full)
            outcome = select(family, budget, family.candidates(), replay, make_pruner(ROOT / "conf", pruner, budget))
            units = sum(replay.units.values())
            row = {
                "seed": full["seed"],
                "pruner": pruner,
                "rungs": ",".join(str(r) for r in budget.rungs),
                "choice": outcome.choice,
                "choice_test_mean": round(scores[outcome.choice][0], 2) if outcome.choice in scores else None,
                "epochs_trained": units,
                "epochs_fraction": round(units / (budget.max_resource * len(replay.units)), 3),
                "est_cpu_fraction": round(replay.cpu_fraction(), 3),
                "rung0_kept": len(outcome.rungs[0].kept) if outcome.rungs else None,
            }
            if pruner == "synchronous_halving" and budget is family_budget:
                row["same_as_real_run"] = outcome.choice == real["choice"] and [
                    r.eliminated for r in outcome.rungs
                ] == [r["eliminated"] for r in real["rungs"]]
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family")
    parser.add_argument("--budget", default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", choices=("hindsight", "halving"), help="run only this mode (no records)")
    args = parser.parse_args()
    modes = [args.only] if args.only else ["hindsight", "halving"]
    done: dict[str, list[dict]] = {mode: [] for mode in modes}
    for seed in args.seeds:  # seed by seed, so a stopped script leaves complete pairs
        for mode in modes:
            done[mode].append(ensure_run(args.family, args.budget, seed, mode))
    if args.only:
        return 0
    family = load_family(args.family, ROOT / "conf")
    settings = {"family": args.family, "budget": args.budget, "seeds": args.seeds, "test_metric": family.test_metric}
    rows, scores = hindsight_rows(done["hindsight"], family.test_metric)
    append_record(RECORDS, rows, benchmark="select_hindsight", settings=settings)
    append_record(
        RECORDS,
        selection_rows(done["halving"], done["hindsight"], scores),
        benchmark="select_halving",
        settings={**settings, "pruner": done["halving"][0]["pruner"]},
    )
    if family.fidelity.resume:
        replayed = replay_rows(family, done["hindsight"], done["halving"], scores)
        append_record(RECORDS, replayed, benchmark="select_replay", settings=settings)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
