"""A study: experiments x variants x seeds under one budget, each run a ``train.py`` process.

A study file (``experiments/<study>.yaml``) says what to run; this module turns it into a plan of
runs with deterministic directories, checks every run's config before anything starts (an unknown
experiment or override key is one clear error and nothing runs), runs what has not run (in ``jobs``
parallel processes of ``threads`` threads each), resumes a run that was interrupted from its last
checkpoint, and copies each finished run's small record files (``metrics.json``,
``config_resolved.yaml``, ``metrics.csv``, ``run.json``; never checkpoints) into the study's folder,
where the report is generated from and where they are committed. This module defines and checks a study;
running it (the ``train.py`` processes, resume, the record copies) is :mod:`metalab.report.runner`.

Study file keys::

    description: one paragraph for the report
    seeds: [0, 1, 2]                   # default seeds of every budget
    threads: 1                         # torch threads per run (cpu_threads and OMP_NUM_THREADS)
    overrides: [...]                   # Hydra overrides of every run
    experiments:                       # conf/experiment/<name>.yaml, optionally with their own overrides
      - omniglot/protonet_5w1s
      - {experiment: omniglot/maml_5w1s, label: maml, overrides: [learner.inner_steps=1]}
      - {avalanche: ewc, suite: split_mnist}   # Avalanche's counterpart of our method, same stream and budget
    variants: {name: [overrides]}      # optional: every experiment is run once per variant
    notes: text for the report's Notes section (a budget's own ``notes:`` replace it in that budget's report)
    budgets:                           # the first is the default; `metalab report ... --budget full`
      tiny: {seeds: [0, 1], overrides: [...], experiment_overrides: {omniglot/maml_5w1s: [...]}}
      full: {overrides: []}
    compare: [...]                     # optional checks on the means, see metalab.report.collect

A run's directory is ``<runs>/<study>/<budget>/<label>[-<variant>]/seed<k>``, and its ``run.json``
keeps the full override list; a run whose overrides no longer match the study is run again. A recorded
run whose config fingerprint (:mod:`metalab.report.identity`) differs from the run the study would make
now, because an experiment file or a default changed since, is *stale*: it is set aside and run again
(or, asked to, kept and marked stale in the report).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from metalab.errors import ConfigError, MetalabError
from metalab.report.identity import fingerprint_record, planned_fingerprint
from metalab.report.records import repo_root

STUDY_KEYS = {
    "description",
    "seeds",
    "threads",
    "overrides",
    "experiments",
    "variants",
    "budgets",
    "compare",
    "title",
    "notes",
}
ENTRY_KEYS = {"experiment", "label", "overrides", "avalanche", "suite"}
BUDGET_KEYS = {"seeds", "overrides", "experiment_overrides", "threads", "description", "notes"}
RECORD_FILES = ("metrics.json", "config_resolved.yaml", "run.json", "continual_metrics.json")


@dataclass(frozen=True)
class Run:
    """One process of a study: an experiment (or an Avalanche counterpart) at one seed."""

    label: str  # row name in the report: the experiment's label plus its variant
    experiment: str  # conf/experiment/<experiment>.yaml, or ``avalanche:<suite>/<method>``
    seed: int
    overrides: tuple[str, ...]  # everything beyond +experiment and seed, in order
    threads: int

    @property
    def is_avalanche(self) -> bool:
        return self.experiment.startswith("avalanche:")

    @property
    def key(self) -> str:
        """Short digest of what the run computes (experiment, seed, overrides; not the thread count)."""
        text = json.dumps([self.experiment, self.seed, list(self.overrides)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def relative_dir(self, study: str, budget: str) -> Path:
        return Path(study) / budget / self.label.replace("/", "_") / f"seed{self.seed}"


@dataclass
class Study:
    """A parsed study file at one budget: the plan of runs and where its records and report go."""

    name: str
    path: Path
    root: Path  # the repository (train.py, conf/)
    budget: str
    budgets: list[str]
    description: str
    runs: list[Run]
    labels: list[str]  # report rows, in the file's order
    compare: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
    fingerprints: dict[Run, str] = field(default_factory=dict)  # what each run computes now (check_runs)
    targets: dict[Run, dict[str, Any]] = field(default_factory=dict)  # its experiment's `targets:` now (check_runs)

    @property
    def folder(self) -> Path:
        """``experiments/<study>/``: report.md, figures, and the committed run records."""
        return self.path.parent / self.name

    def records_dir(self, run: Run) -> Path:
        return self.folder / "runs" / self.budget / run.label.replace("/", "_") / f"seed{run.seed}"


def _as_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{where} must be a list of Hydra overrides such as [trainer.max_epochs=2]")
    return [str(v) for v in value]


def _check_keys(node: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def load_study(path: str | Path, budget: str | None = None, seeds: list[int] | None = None) -> Study:
    """Parse ``path`` into the plan of runs at ``budget`` (default: the file's first budget)."""
    path = Path(path)
    if not path.is_file() and not path.suffix and (Path("experiments") / f"{path}.yaml").is_file():
        path = Path("experiments") / f"{path}.yaml"
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} not found (give experiments/<study>.yaml)")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"study file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"study file {path} must be a mapping of keys such as experiments:, seeds:, budgets:")
    name = path.stem
    _check_keys(spec, STUDY_KEYS, f"study {name}")
    budgets = spec.get("budgets") or {"default": {}}
    if budget is None:
        budget = next(iter(budgets))
    if budget not in budgets:
        raise ConfigError(f"--budget {budget!r} is not allowed: study {name} has budgets {', '.join(budgets)}")
    chosen = budgets[budget] or {}
    _check_keys(chosen, BUDGET_KEYS, f"study {name}, budget {budget}")
    threads = int(chosen.get("threads", spec.get("threads", 1)))
    run_seeds = seeds if seeds is not None else list(chosen.get("seeds", spec.get("seeds", [0])))
    common = _as_list(spec.get("overrides"), f"study {name}: overrides") + _as_list(
        chosen.get("overrides"), f"study {name}, budget {budget}: overrides"
    )
    per_experiment = chosen.get("experiment_overrides") or {}
    variants = spec.get("variants") or {"": []}
    entries = spec.get("experiments")
    if not entries:
        raise ConfigError(f"study {name} lists no experiments (experiments: [<suite>/<name>, ...])")
    runs, labels = [], []
    for entry in entries:
        entry = {"experiment": entry} if isinstance(entry, str) else dict(entry)
        _check_keys(entry, ENTRY_KEYS, f"study {name}, experiment {entry}")
        if "avalanche" in entry:
            method, suite = entry["avalanche"], entry.get("suite")
            if not suite:
                raise ConfigError(f"study {name}: an avalanche entry needs suite: (split_mnist or split_cifar10)")
            experiment = f"avalanche:{suite}/{method}"
            label = entry.get("label", f"{AVALANCHE_NAMES.get(method, method)} (Avalanche)")
            extra = per_experiment.get(f"{suite}/{method}", [])
        else:
            experiment = str(entry.get("experiment", ""))
            label = entry.get("label", experiment.split("/")[-1])
            extra = per_experiment.get(experiment, [])
        for variant, variant_overrides in variants.items():
            row = f"{label} ({variant})" if variant else label
            overrides = tuple(
                common
                + _as_list(variant_overrides, f"variant {variant}")
                + _as_list(entry.get("overrides"), f"experiment {label}: overrides")
                + _as_list(extra, f"budget {budget}: experiment_overrides")
            )
            labels.append(row)
            runs += [Run(row, experiment, int(seed), overrides, threads) for seed in run_seeds]
    unknown_overrides = sorted(set(per_experiment) - {r.experiment.removeprefix("avalanche:") for r in runs})
    if unknown_overrides:
        raise ConfigError(
            f"study {name}, budget {budget}: experiment_overrides names {unknown_overrides[0]!r}, "
            "which is not in experiments:"
        )
    return Study(
        name=name,
        path=path.resolve(),
        root=repo_root(path.resolve()),
        budget=budget,
        budgets=list(budgets),
        description=str(spec.get("description", "")).strip(),
        runs=runs,
        labels=labels,
        compare=list(spec.get("compare") or []),
        notes=str(chosen.get("notes", spec.get("notes", ""))).strip(),
    )  # a budget's own notes first


# ----------------------------------------------------------------------------------------------------- checks


def check_runs(study: Study) -> dict[Run, str]:
    """Compose every distinct run's config now, so a wrong experiment name or override key stops the
    study with one message before any run starts (and before any finished run is touched); return (and
    keep in ``study.fingerprints``) the fingerprint of the config each run would have."""
    composed: dict[tuple[str, tuple[str, ...]], Any] = {}
    for run in study.runs:
        if (run.experiment, run.overrides) not in composed:
            composed[(run.experiment, run.overrides)] = compose_run(study, run)
        cfg = composed[(run.experiment, run.overrides)]
        cfg.seed = run.seed
        study.fingerprints[run] = ("avalanche:" if run.is_avalanche else "") + planned_fingerprint(cfg)
        if not run.is_avalanche:  # a peer's run is composed from our paired experiment, whose targets are ours
            study.targets[run] = OmegaConf.to_container(cfg.get("targets") or OmegaConf.create({}), resolve=True)
    return study.fingerprints


def current_targets(study: Study, run: Run, recorded: dict[str, Any]) -> dict[str, Any]:
    """The paper figures and goals a run's row compares with: its experiment file's `targets:` as they are now
    (they are left out of the run's identity, so a goal edited later applies to the runs already recorded);
    the record's own for an Avalanche run, which has none."""
    if run not in study.fingerprints:
        check_runs(study)
    return study.targets.get(run, recorded)


def compose_run(study: Study, run: Run) -> Any:
    """The config ``run`` gets from the study's ``conf/`` now (Hydra's composition, no run started); for an
    Avalanche run, the config of our experiment it is paired with. One clear error for a wrong name or key."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    from metalab.cli_errors import gist, missing_option

    conf = study.root / "conf"
    experiment = run.experiment.removeprefix("avalanche:")
    if run.is_avalanche:
        suite, _, method = experiment.partition("/")
        experiment = f"{suite}/{AVALANCHE_BASE.get(method, method)}"
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"+experiment={experiment}", *run.overrides])
    except MissingConfigException as error:
        raise ConfigError(f"study {study.name}, run {run.label}: {missing_option(error, conf)}") from None
    except (HydraException, OmegaConfBaseException) as error:
        cause = f" ({gist(str(error.__cause__))})" if error.__cause__ else ""
        raise ConfigError(f"study {study.name}, run {run.label}: {gist(str(error))}{cause}") from None
    cfg.seed = run.seed
    return cfg


def record_fingerprint(folder: Path) -> str | None:
    """The fingerprint of the run recorded in ``folder``: from its ``config_resolved.yaml`` (train.py runs),
    else the one its ``run.json`` stored (Avalanche runs, which write no config)."""
    return fingerprint_record(folder) or _read_json(folder / "run.json").get("fingerprint")


def is_stale(study: Study, run: Run, folder: Path) -> bool:
    """Whether the record in ``folder`` was made by a config other than the one ``run`` has now
    (a record without a fingerprint, made before records carried one, counts as stale)."""
    if run not in study.fingerprints:
        check_runs(study)
    return record_fingerprint(folder) != study.fingerprints[run]


# Avalanche's side of benchmarks/continual/avalanche_side_by_side.py: our method -> the strategy it is paired with
AVALANCHE_BASE = {"finetune": "finetune", "ewc": "ewc", "er_500": "er_500", "lwf": "lwf"}
AVALANCHE_NAMES = {"finetune": "Naive", "ewc": "EWC", "er_500": "Replay", "lwf": "LwF"}


# -------------------------------------------------------------------------------------------------- running


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["Run", "Study", "load_study", "check_runs", "compose_run", "is_stale", "record_fingerprint", "MetalabError"]
