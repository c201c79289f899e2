"""``metalab select <family> --budget <name>``: choose a model and learner by successive halving over a family's
categorical space, on the sweep machinery (Optuna study, trials, pruners from ``conf/pruner/``, configs composed
as ``metalab sweep`` composes them)::

    metalab select omniglot_fewshot --budget full --seed 0          # halving: the choice, its curves and why
    metalab select split_mnist --budget full --hindsight --seed 0    # every candidate at the full budget, tested

The candidates are every combination of the family's ``choice(...)`` entries (:mod:`.families`). Each is an
Optuna trial (enqueued with its params, so the study holds the whole space); a scheduler advances all live
trials to the next rung of the budget's schedule, lets each report its objective there, and only then asks
each ``should_prune``: with the default pruner (:class:`~metalab.sweeps.halving.SynchronousHalvingPruner`)
that is successive halving (Jamieson & Talwalkar 2016), with ``--pruner successive_halving`` or
``hyperband`` it is Optuna's asynchronous rule (ASHA, Li et al. 2020; Hyperband, Li et al. 2018) in the same
lock-step. Once one candidate is left it trains straight to the full resource. A candidate resumes from its
last checkpoint at the next rung (``fidelity.resume``: Lightning epochs) or trains again at the larger data
size (a continual stream, whose learning curve over its tasks is not a fidelity).

Everything lands in ``--out`` (default ``logs/select/<family>/<budget>_seed<N>_<mode>/``): ``selection.json``
(the choice, every candidate's curve and CPU seconds, each rung's values, who went on and who was eliminated),
``curves.png`` and the candidates' run folders. CPU seconds are this process's own (``time.process_time``),
counted from after the heavy imports, so the halving run and the hindsight run pay the same fixed costs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from omegaconf import OmegaConf

from metalab.errors import ConfigError, MetalabError
from metalab.sweeps.families import Budget, Candidate, Family, family_names, load_family
from metalab.sweeps.halving import rung_steps
from metalab.sweeps.runner import compose, config_dir, instantiate_node


class StageRunner(Protocol):
    """Trains candidates in stages: the real one runs :func:`metalab.run.train`; tests use a synthetic one."""

    def advance(self, candidate: Candidate, start: int, stop: int) -> dict[int, float]:
        """Train ``candidate`` from resource ``start`` (0: from scratch) to ``stop``; the objective's values at
        the resources in ``(start, stop]`` it measured (at least at ``stop``)."""

    def test(self, candidate: Candidate) -> dict[str, float]:
        """The family's test metrics of the candidate as trained to the full budget."""


@dataclass
class Rung:
    """One rung's decision: the resource, every live candidate's value there, who went on and who stopped."""

    resource: int
    values: dict[str, float]
    kept: list[str]
    eliminated: list[str]
    failed: list[str] = field(default_factory=list)  # runs that failed on the way to this rung (diverged)


@dataclass
class Outcome:
    """What ``metalab select`` prints and writes to ``selection.json``."""

    family: str
    budget: dict[str, Any]
    mode: str  # halving | hindsight
    pruner: str
    seed: int
    objective: str
    direction: str
    candidates: dict[str, dict[str, Any]]  # name -> params
    default: str
    resource: str = ""  # what one unit of resource is (the family's fidelity), for the plot and the reader
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)  # resource each candidate was trained to
    rungs: list[Rung] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    choice: str | None = None
    total_cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def final_value(self, name: str) -> float:
        return self.curves.get(name, {}).get(self.budget["max_resource"], math.nan)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        """An outcome read back from ``selection.json`` (e.g. to plot it again)."""
        data = dict(data)
        data["rungs"] = [Rung(**r) for r in data.get("rungs", [])]
        data["curves"] = {k: {int(s): v for s, v in c.items()} for k, c in data.get("curves", {}).items()}
        data["reached"] = {k: int(v) for k, v in data.get("reached", {}).items()}
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["curves"] = {k: {str(s): v for s, v in sorted(c.items())} for k, c in self.curves.items()}
        return data


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="choose a model/learner of a family by successive halving (conf/select/)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("family", help="a conf/select/ file: the family's candidates, objective and budgets")
    parser.add_argument("--budget", help="one of the family's budgets (default: its first)")
    parser.add_argument("--seed", type=int, default=0, help="the candidates' training seed (default 0)")
    parser.add_argument(
        "--pruner", help="a conf/pruner/ file (default: the family's, synchronous_halving); none: no pruning"
    )
    parser.add_argument(
        "--hindsight", action="store_true", help="train every candidate at the full budget and test it (no pruning)"
    )
    parser.add_argument("--only", nargs="+", metavar="CANDIDATE", help="only these candidates (by name)")
    parser.add_argument("--out", type=Path, help="output folder (default logs/select/<family>/<budget>_seed<N>_<mode>)")
    parser.add_argument("--config-dir", type=Path, help="the conf/ folder (default: ./conf, else the repo's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    conf = config_dir(args.config_dir)
    family = load_family(args.family, conf)
    budget = family.budget(args.budget)
    if args.seed < 0:
        raise ConfigError(f"--seed={args.seed} is not allowed: must be >= 0")
    candidates = _chosen(family.candidates(), args.only)
    mode = "hindsight" if args.hindsight else "halving"
    pruner_name = "none" if args.hindsight else (args.pruner or family.pruner)
    out = args.out or Path("logs") / "select" / family.name / f"{budget.name}_seed{args.seed}_{mode}"
    runner = LightningStages(family, budget, args.seed, out, conf)
    runner.warm_up()  # imports before the clock starts: both modes pay them outside the count
    if args.hindsight:
        outcome = hindsight(family, budget, candidates, runner, args.seed)
    else:
        outcome = select(family, budget, candidates, runner, make_pruner(conf, pruner_name, budget), args.seed)
        outcome.pruner = pruner_name
    write_outcome(outcome, out)
    print(describe(outcome))
    if outcome.choice is None:
        first = next(iter(outcome.failed.items()), ("", "no value"))
        print(f"error: select: no candidate finished ({first[0]}: {first[1]})", file=sys.stderr)
        return 1
    return 0


def make_pruner(conf: Path, name: str, budget: Budget) -> optuna.pruners.BasePruner:
    """A ``conf/pruner/`` file with the budget's resources in place of the file's own."""
    path = conf / "pruner" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (conf / "pruner").glob("*.yaml"))
        raise ConfigError(f"--pruner={name!r} is not allowed: must be one of {', '.join(names)}")
    node = OmegaConf.load(path)
    for key in ("min_resource", "reduction_factor", "max_resource"):
        if key in node:
            node[key] = getattr(budget, key)
    return instantiate_node(node, "pruner")


def select(
    family: Family,
    budget: Budget,
    candidates: list[Candidate],
    runner: StageRunner,
    pruner: optuna.pruners.BasePruner,
    seed: int = 0,
) -> Outcome:
    """Successive halving over ``candidates`` in lock-step: all live trials reach a rung, then each is judged."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    outcome = _outcome(family, budget, candidates, "halving", type(pruner).__name__, seed)
    study = optuna.create_study(  # a fixed name: Optuna's Hyperband assigns trials to brackets by hashing it
        study_name=f"select-{family.name}-{budget.name}-seed{seed}",
        direction=family.direction,
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed),
    )
    alive = [(c, _ask(study, family, c)) for c in candidates]
    for step in budget.rungs:
        if len(alive) == 1:
            step = budget.max_resource  # the one left: straight to the full budget
        before = [c.name for c, _ in alive]
        alive = _advance_all(outcome, runner, alive, step, study)
        if step == budget.max_resource or not alive:
            break
        pruned = {c.name for c, t in alive if t.should_prune()}  # asked only once every live trial reported
        for candidate, trial in alive:
            if candidate.name in pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        values = {c.name: outcome.curves[c.name].get(step, math.nan) for c, _ in alive}
        outcome.rungs.append(
            Rung(
                step,
                values,
                [n for n in values if n not in pruned],
                [n for n in values if n in pruned],
                [n for n in before if n not in values],
            )
        )
        alive = [(c, t) for c, t in alive if c.name not in pruned]
    for candidate, trial in alive:
        study.tell(trial, outcome.final_value(candidate.name))
    outcome.choice = _best(outcome, [c.name for c, _ in alive], family.direction)
    outcome.total_cpu_seconds = time.process_time() - start_cpu
    outcome.wall_seconds = time.perf_counter() - start_wall
    return outcome


def hindsight(family: Family, budget: Budget, candidates: list[Candidate], runner: StageRunner, seed: int) -> Outcome:
    """Every candidate trained straight to the full budget (one stage each), then tested: the best in hindsight."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    outcome = _outcome(family, budget, candidates, "hindsight", "none", seed)
    for candidate in candidates:
        if _stage(outcome, runner, candidate, 0, budget.max_resource):
            outcome.test[candidate.name] = runner.test(candidate)
    done = [c.name for c in candidates if c.name not in outcome.failed]
    outcome.choice = _best(outcome, done, family.direction)
    outcome.total_cpu_seconds = time.process_time() - start_cpu
    outcome.wall_seconds = time.perf_counter() - start_wall
    return outcome


def _outcome(family: Family, budget: Budget, candidates: list[Candidate], mode: str, pruner: str, seed: int) -> Outcome:
    return Outcome(
        family=family.name,
        budget=asdict(budget),
        mode=mode,
        pruner=pruner,
        seed=seed,
        objective=family.objective,
        direction=family.direction,
        candidates={c.name: c.params for c in candidates},
        default=family.default_candidate().name,
        resource=family.fidelity.key + (f" / {family.fidelity.unit}" if family.fidelity.unit != 1 else ""),
    )


def _ask(study: optuna.Study, family: Family, candidate: Candidate) -> optuna.Trial:
    study.enqueue_trial(candidate.params)
    trial = study.ask(fixed_distributions=family.space.distributions)
    trial.set_user_attr("candidate", candidate.name)
    return trial


def _advance_all(outcome: Outcome, runner: StageRunner, alive: list, step: int, study: optuna.Study) -> list:
    """Train every live trial to ``step`` and report its curve; a candidate whose run fails is told FAIL."""
    still = []
    for candidate, trial in alive:
        start = outcome.reached.get(candidate.name, 0)
        if _stage(outcome, runner, candidate, start, step):
            for resource, value in sorted(outcome.curves[candidate.name].items()):
                if start < resource <= step:
                    trial.report(value, resource)
            still.append((candidate, trial))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return still


def _stage(outcome: Outcome, runner: StageRunner, candidate: Candidate, start: int, stop: int) -> bool:
    """One training stage; its CPU seconds counted against the candidate. False when the run failed."""
    cpu = time.process_time()
    try:
        points = runner.advance(candidate, start, stop)
        if stop not in points:
            raise ConfigError(f"objective {outcome.objective} was not measured at resource {stop}")
    except MetalabError as error:  # e.g. a diverged run (NumericalError): that candidate fails, the others go on
        outcome.failed[candidate.name] = str(error)
        print(f"[metalab] select: {candidate.name} failed at resource {stop}: {error}", flush=True)
        return False
    finally:
        outcome.cpu_seconds[candidate.name] = outcome.cpu_seconds.get(candidate.name, 0.0) + time.process_time() - cpu
    outcome.curves.setdefault(candidate.name, {}).update(points)
    outcome.reached[candidate.name] = stop
    return True


def _best(outcome: Outcome, names: list[str], direction: str) -> str | None:
    finite = [n for n in names if math.isfinite(outcome.final_value(n))]
    if not finite:
        return None
    key: Callable[[str], float] = outcome.final_value
    return max(finite, key=key) if direction == "maximize" else min(finite, key=key)


def _chosen(candidates: list[Candidate], only: list[str] | None) -> list[Candidate]:
    if not only:
        return candidates
    names = [c.name for c in candidates]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is not allowed: must be among the candidates {', '.join(names)}")
    return [c for c in candidates if c.name in only]


class LightningStages:
    """Stages of real runs: :func:`metalab.run.train` on the composed config of a candidate at a resource.

    With ``fidelity.resume`` a candidate keeps one run folder and each stage continues from its
    ``checkpoints/last.ckpt`` (Lightning restores the optimiser, RNG and sampler state), the curve read per
    validation epoch; otherwise each stage is a fresh run at ``fidelity.key = resource * unit`` whose
    ``optimized_metric`` is the point of the curve at that resource."""

    def __init__(self, family: Family, budget: Budget, seed: int, out: Path, conf: Path) -> None:
        self.family, self.budget, self.seed, self.out, self.conf = family, budget, seed, out, conf

    def warm_up(self) -> None:
        import metalab.run  # noqa: F401 - torch, Lightning and the learners

    def run_dir(self, candidate: Candidate, stop: int) -> Path:
        base = self.out / "runs" / candidate.name
        return base if self.family.fidelity.resume else base / f"r{stop}"

    def overrides(self, candidate: Candidate, stop: int) -> list[str]:
        return [
            *candidate.overrides,
            *self.budget.overrides,
            self.family.fidelity.override(stop),
            f"seed={self.seed}",
            f"optimized_metric={self.family.objective}",
        ]

    def advance(self, candidate: Candidate, start: int, stop: int) -> dict[int, float]:
        from metalab.run import train

        run_dir = self.run_dir(candidate, stop)
        extra = []
        if self.family.fidelity.resume and start > 0:
            extra.append(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
        cfg = compose(self.conf, self.overrides(candidate, stop) + extra)
        OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)
        curve = ObjectiveCurve(self.family.objective, self.family.fidelity.unit)
        value = train(cfg, extra_callbacks=[curve] if self.family.fidelity.resume else [])
        if self.family.fidelity.resume:
            return {r: v for r, v in curve.points.items() if start < r <= stop}
        return {stop: math.nan if value is None else float(value)}

    def test(self, candidate: Candidate) -> dict[str, float]:
        from metalab.run import train

        run_dir = self.run_dir(candidate, self.budget.max_resource)
        overrides = self.overrides(candidate, self.budget.max_resource) + [
            *self.family.test_overrides,
            "train=false",
            "test=true",
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"optimized_metric={self.family.test_metric}",
        ]
        cfg = compose(self.conf, overrides)
        OmegaConf.update(cfg, "paths.output_dir", str(run_dir / "test"), force_add=True)
        train(cfg)
        metrics = json.loads((run_dir / "test" / "metrics.json").read_text())["metrics"]
        return {k: float(v) for k, v in metrics.items() if k.startswith("test/") and isinstance(v, (int, float))}


class ObjectiveCurve:
    """A Lightning callback that keeps the objective after each validation epoch, keyed by epochs trained."""

    def __new__(cls, monitor: str, unit: int = 1):  # a Lightning Callback, imported only when a run needs it
        from lightning.pytorch.callbacks import Callback

        class _Curve(Callback):
            def __init__(self) -> None:
                self.monitor, self.unit, self.points = monitor, unit, {}

            def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
                if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
                    return
                epochs = (trainer.current_epoch + 1) // self.unit
                self.points[epochs] = float(trainer.callback_metrics[self.monitor])

        return _Curve()


def write_outcome(outcome: Outcome, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps(outcome.to_json(), indent=2))
    plot_curves(outcome, out / "curves.png")


def plot_curves(outcome: Outcome, path: Path) -> None:
    """Every candidate's objective against resource; a cross where a rung eliminated it, a star on the choice."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eliminated_at = {name: rung.resource for rung in outcome.rungs for name in rung.eliminated}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in outcome.curves.items():
        steps = sorted(curve)
        (line,) = ax.plot(
            steps, [curve[s] for s in steps], marker=".", label=name, lw=2 if name == outcome.choice else 1
        )
        if name in eliminated_at:
            ax.plot([eliminated_at[name]], [curve[eliminated_at[name]]], "x", color=line.get_color(), ms=10)
        if name == outcome.choice:
            ax.plot([steps[-1]], [curve[steps[-1]]], "*", color=line.get_color(), ms=14)
    for rung in outcome.rungs:
        ax.axvline(rung.resource, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xticks(rung_steps(*(outcome.budget[k] for k in ("min_resource", "reduction_factor", "max_resource"))))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f"{outcome.resource or 'resource'} (dotted: rungs, x: eliminated, star: choice)", fontsize=9)
    ax.set_ylabel(outcome.objective)
    ax.set_title(f"{outcome.family}, {outcome.mode}, seed {outcome.seed}: choice {outcome.choice}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(outcome: Outcome) -> str:
    """The console summary: the choice, each rung (values, who went on, who was eliminated) and the CPU."""
    lines = [f"[metalab] select {outcome.family} ({outcome.mode}, pruner {outcome.pruner}, seed {outcome.seed})"]
    for rung in outcome.rungs:
        shown = ", ".join(f"{n} {v:.2f}" for n, v in sorted(rung.values.items(), key=lambda kv: -kv[1]))
        lines.append(f"  rung at resource {rung.resource}: {shown}")
        failed = f"; failed {', '.join(rung.failed)}" if rung.failed else ""
        lines.append(f"    kept {', '.join(rung.kept)}; eliminated {', '.join(rung.eliminated) or 'none'}{failed}")
    for name in outcome.candidates:
        value = outcome.final_value(name)
        tested = outcome.test.get(name, {})
        extra = f"; {', '.join(f'{k} {v:.2f}' for k, v in tested.items() if k.endswith('acc'))}" if tested else ""
        reached = outcome.reached.get(name, 0)
        lines.append(
            f"  {name}: trained to {reached}, {outcome.objective} at full "
            f"{'-' if math.isnan(value) else f'{value:.2f}'}, {outcome.cpu_seconds.get(name, 0):.1f} CPU-s{extra}"
            + (f" (failed: {outcome.failed[name]})" if name in outcome.failed else "")
        )
    lines.append(f"  choice: {outcome.choice}  (default: {outcome.default})")
    lines.append(f"  CPU {outcome.total_cpu_seconds:.1f} s, wall {outcome.wall_seconds:.1f} s")
    return "\n".join(lines)


def allowed_families(conf: Path | None = None) -> list[str]:
    return family_names(config_dir(conf))
