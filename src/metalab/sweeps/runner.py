"""``metalab sweep``: the Optuna sweep of an ``hparams_search`` config, with pruning and parallel workers.

Hydra's Optuna sweeper cannot prune: its jobs never see their trial. This runner drives the same configs
with :meth:`optuna.Study.optimize` in one process, trains each trial in process through
:func:`metalab.run.train`, and hands Lightning a pruning callback (optuna-integration's
``PyTorchLightningPruningCallback``) that reports the optimised metric after each validation epoch::

    metalab sweep hparams_search=protonet_optuna +experiment=omniglot/protonet_5w1s --pruner median

The search space, sampler, direction, study name, storage and trial count come from the composed
``hydra.sweeper`` node, exactly as ``train.py -m`` reads them; flags override the last three. Start the
same command in several processes (or on several nodes) with one ``--storage`` and they share the study:
``journal:<file>`` on one machine, a PostgreSQL URL on a cluster. Each worker registers in the storage and
seeds its sampler from the study's seed and its own index (:mod:`.workers`), so workers do not draw the
same parameters; a value given on the command line for a searched key fixes it (:mod:`.space`). A failed
or NaN trial is recorded as failed and the sweep goes on. A worker that dies mid-trial leaves its trial
``RUNNING``; SQL storages
notice through Optuna's heartbeat, and on one machine the other workers notice that its process is gone
(:func:`fail_trials_of_dead_workers`): either way the trial is marked failed and its parameters queued
again.

``--evaluate defaults|best`` runs one configuration at the sweep's budget instead (the config's own
values, or the study's best), e.g. with ``--seed 1 --test`` to retrain the winner with a fresh seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict

from metalab.errors import ConfigError, MetalabError
from metalab.sweeps.space import SearchSpace, is_sweep, read_search_space
from metalab.sweeps.storage import describe, open_storage
from metalab.sweeps.workers import register_worker, worker_seed

WORKER_ATTR = "worker"  # "<host>:<pid>" of the process that runs a trial
HEARTBEAT_SECONDS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="Optuna sweep over an hparams_search config, with pruning", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, e.g. hparams_search=protonet_optuna +experiment=omniglot/protonet_5w1s",
    )
    pruners = sorted(path.stem for path in (config_dir(None) / "pruner").glob("*.yaml"))  # the files, not a copy
    parser.add_argument("--pruner", default="none", help=f"a conf/pruner/ file: {', '.join(pruners)} (default none)")
    parser.add_argument("--n-trials", type=int, help="trials this process runs (default: hydra.sweeper.n_trials)")
    parser.add_argument(
        "--storage", help="sqlite:///file.db, journal:<file>, or an SQLAlchemy URL (default: hydra.sweeper.storage)"
    )
    parser.add_argument("--study-name", help="default: hydra.sweeper.study_name")
    parser.add_argument(
        "--evaluate",
        choices=("defaults", "best"),
        help="run one configuration at the sweep's budget instead of sweeping",
    )
    parser.add_argument("--seed", type=int, help="with --evaluate: the run's seed")
    parser.add_argument("--test", action="store_true", help="with --evaluate: also test (test=true)")
    parser.add_argument("--config-dir", type=Path, help="the conf/ folder (default: ./conf, else the repo's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n_trials is not None and args.n_trials < 0:
        raise ConfigError(f"--n-trials={args.n_trials} is not allowed: must be >= 0")
    sweep = SweepConfig.compose(config_dir(args.config_dir), args.overrides, args.pruner)
    storage = open_storage(
        args.storage if args.storage is not None else sweep.storage_spec, heartbeat_seconds=HEARTBEAT_SECONDS
    )
    study_name = args.study_name or sweep.study_name
    if args.evaluate:
        return evaluate(sweep, storage, study_name, args)
    index = register_worker(storage, study_name)
    seed = worker_seed(sweep.study_seed, index)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sweep.sampler(seed),
        pruner=sweep.pruner,
        direction=sweep.direction,
        load_if_exists=True,
    )
    sweep.worker = {"worker_index": index, "sampler_seed": seed}
    n_trials = sweep.n_trials if args.n_trials is None else args.n_trials
    print(
        f"[metalab] study {study.study_name!r} in {describe(storage)}; {n_trials} trials in this worker "
        f"(worker {index}, sampler seed {seed}), pruner {type(sweep.pruner).__name__}, "
        f"sampler {type(study.sampler).__name__}",
        flush=True,
    )
    fail_trials_of_dead_workers(study)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    study.optimize(
        sweep.objective, n_trials=n_trials, catch=(Exception,), callbacks=[lambda s, _: fail_trials_of_dead_workers(s)]
    )
    summary = summarise(study, time.perf_counter() - start_wall, cpu_seconds() - start_cpu)
    print(json.dumps(summary, indent=2))
    out = sweep.sweep_dir(study.study_name) / f"summary_{socket.gethostname()}_{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return 0


class SweepConfig:
    """The composed ``hydra.sweeper`` node of a sweep, and how one trial's config is made from it."""

    def __init__(self, conf_dir: Path, overrides: list[str], cfg: DictConfig, pruner: optuna.pruners.BasePruner):
        sweeper = cfg.hydra.sweeper
        if "sampler" not in sweeper:  # Hydra's basic sweeper (no hparams_search): nothing to sample with
            raise ConfigError(
                "no search space: add hparams_search=<name> (conf/hparams_search/: "
                f"{', '.join(_options(conf_dir, 'hparams_search'))})"
            )
        self.conf_dir, self.overrides, self.pruner = conf_dir, overrides, pruner
        # as Hydra's sweeper does: command-line overrides join the params and outrank them (a sweep there,
        # e.g. model.hidden=choice(8,16), is searched; a plain value is fixed); pruner.* only shapes the pruner
        self.space: SearchSpace = read_search_space(
            sweeper.params, [o for o in overrides if not o.lstrip("+~").startswith("pruner")]
        )
        self.sampler_node = sweeper.sampler
        self.study_seed: int | None = self.sampler_node.get("seed")
        self.worker: dict[str, Any] = {}  # this process's worker index and sampler seed (set by run)
        self.direction = _direction(sweeper.direction)
        self.study_name: str = sweeper.study_name or "metalab"
        self.storage_spec = (
            OmegaConf.to_container(sweeper.storage) if OmegaConf.is_config(sweeper.storage) else sweeper.storage
        )
        self.n_trials: int = int(sweeper.n_trials)
        self.log_dir = Path(cfg.paths.log_dir)
        self.monitor: str | None = self.space.fixed.get("optimized_metric") or cfg.get("optimized_metric")
        if not self.monitor:
            raise ConfigError("the sweep has no objective: set optimized_metric (e.g. val/acc) in hydra.sweeper.params")

    @classmethod
    def compose(cls, conf_dir: Path, overrides: list[str], pruner_name: str) -> SweepConfig:
        plain = [o for o in overrides if not is_sweep(o)]  # sweeps are for the search space, not for compose
        cfg = compose(conf_dir, plain + [f"+pruner={pruner_name}"], hydra_node=True)
        return cls(conf_dir, list(overrides), cfg, instantiate_node(cfg.pruner, "pruner"))

    def sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        """The configured sampler; ``seed`` (a worker's seed) replaces the node's own when the node has one."""
        node = self.sampler_node
        if seed is not None and "seed" in node:
            node = OmegaConf.merge(node, {"seed": seed})
        return instantiate_node(node, "hydra.sweeper.sampler")

    def sweep_dir(self, study_name: str) -> Path:
        return self.log_dir / "sweeps" / study_name

    def trial_config(self, params: dict[str, Any], output_dir: Path, extra: list[str] = ()) -> DictConfig:
        cfg = compose(self.conf_dir, self.space.trial_overrides(params) + list(extra))
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
        return cfg

    def objective(self, trial: optuna.Trial) -> float:
        """One trial: sample, train with the pruning callback, return the optimised metric."""
        # first of all, so a worker that dies even while importing leaves a trial the others can fail
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        for key, value in self.worker.items():
            trial.set_user_attr(key, value)
        params = {name: trial._suggest(name, dist) for name, dist in self.space.distributions.items()}
        output_dir = self.sweep_dir(trial.study.study_name) / f"trial_{trial.number:04d}"
        start = cpu_seconds()
        try:
            cfg = self.trial_config(params, output_dir)
            value = self.train_trial(cfg, trial)
        except MetalabError as error:
            print(f"error: trial {trial.number}: {error}", file=sys.stderr, flush=True)
            trial.set_user_attr("error", str(error))
            raise
        finally:
            trial.set_user_attr("cpu_seconds", round(cpu_seconds() - start, 2))
            trial.set_user_attr("output_dir", str(output_dir))
        if value is None or not math.isfinite(value):
            trial.set_user_attr("error", f"{self.monitor} = {value}")
        return float("nan") if value is None else float(value)

    def train_trial(self, cfg: DictConfig, trial: optuna.Trial) -> float | None:
        """Train one trial's config in this process, with the pruning callback; the optimised metric.

        A method of its own so that a test can put a cheap objective in its place and still drive the
        real sampling, storage and worker code."""
        from optuna_integration import PyTorchLightningPruningCallback

        from metalab.run import train

        return train(cfg, extra_callbacks=[PyTorchLightningPruningCallback(trial, monitor=self.monitor)])


def evaluate(sweep: SweepConfig, storage: Any, study_name: str, args: argparse.Namespace) -> int:
    """One run at the sweep's budget: the config's own values (``defaults``) or the study's best."""
    from metalab.run import train

    params: dict[str, Any] = {}
    if args.evaluate == "best":
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            params = dict(study.best_trial.params)
        except (KeyError, ValueError) as error:
            raise ConfigError(
                f"--evaluate best: study {study_name!r} in {describe(storage)} has no completed trial ({error})"
            ) from None
    extra = ([f"seed={args.seed}"] if args.seed is not None else []) + (["test=true"] if args.test else [])
    name = (
        f"evaluate_{args.evaluate}"
        + (f"_seed{args.seed}" if args.seed is not None else "")
        + ("_test" if args.test else "")
    )
    output_dir = sweep.sweep_dir(study_name) / name
    cfg = sweep.trial_config(params, output_dir, extra)
    value = train(cfg)
    result = {
        "evaluate": args.evaluate,
        "params": params,
        "seed": int(cfg.seed),
        sweep.monitor: value,
        "metrics": json.loads((output_dir / "metrics.json").read_text())["metrics"],
        "output_dir": str(output_dir),
    }
    print(json.dumps(result, indent=2))
    return 0


def fail_trials_of_dead_workers(study: optuna.Study) -> None:
    """Mark failed every running trial whose worker process on this host has gone, and queue its params again.

    Needed for the journal storage (no heartbeat in Optuna 5); harmless for SQL storages, whose heartbeat
    does the same across hosts. Two workers may race for one trial: the loser's update is refused.
    """
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _process_alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", f"worker {host}:{pid} died mid-trial")
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        print(
            f"[metalab] trial {trial.number}: worker {host}:{pid} died; marked failed, parameters queued again",
            flush=True,
        )


def summarise(study: optuna.Study, wall: float, cpu: float) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    summary: dict[str, Any] = {
        "study": study.study_name,
        "trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "worker_wall_seconds": round(wall, 1),
        "worker_cpu_seconds": round(cpu, 1),
    }
    try:
        summary.update(best_value=study.best_value, best_params=study.best_params, best_trial=study.best_trial.number)
    except ValueError:
        summary["best_value"] = None
    return summary


def compose(conf_dir: Path, overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """The config ``train.py`` would get for ``overrides``; a wrong option or key is one ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=overrides, return_hydra_config=hydra_node)
    except MissingConfigException as error:
        group, _, name = str(error.missing_cfg_file or "").rpartition("/")
        group = group.removeprefix("hydra/sweeper/") if group.startswith("hydra/sweeper/") else group
        label = "sampler" if group == "sampler" else group or "config"
        folder = f"hydra/sweeper/{group}" if group == "sampler" else group
        raise ConfigError(
            f"unknown {label} {name!r}; available: {', '.join(_options(conf_dir, folder)) or 'none'}"
        ) from None
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(
            " ".join(
                line.strip()
                for line in str(error).splitlines()
                if line.strip() and not line.strip().startswith(("full_key", "object_type", "reference_type"))
            )
        ) from None


def instantiate_node(node: Any, key: str) -> Any:
    import hydra

    try:
        return hydra.utils.instantiate(node)
    except Exception as error:  # noqa: BLE001 - a bad _target_ or argument is the user's input
        cause = error.__cause__ or error
        raise ConfigError(
            f"{key}: cannot be created ({str(cause).splitlines()[0] if str(cause) else type(cause).__name__})"
        ) from None


def config_dir(given: Path | None) -> Path:
    if given is not None:
        if not (given / "train.yaml").is_file():
            raise ConfigError(f"--config-dir={given} is not allowed: it has no train.yaml")
        return given.resolve()
    local = Path.cwd() / "conf"
    if (local / "train.yaml").is_file():
        return local
    return Path(__file__).resolve().parents[3] / "conf"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _direction(direction: Any) -> str:
    name = getattr(direction, "name", direction)
    name = str(name).lower()
    if name not in ("minimize", "maximize"):
        raise ConfigError(f"hydra.sweeper.direction={direction!r} is not allowed: must be minimize or maximize")
    return name


def _options(conf_dir: Path, group: str) -> list[str]:
    """Option names of a config group: yaml files in ``conf/<group>`` and, for samplers, the plugin's."""
    names = {p.stem for p in (conf_dir / group).glob("*.yaml")}
    if group == "hydra/sweeper/sampler":
        names |= {"tpe", "random", "cmaes", "nsgaii", "motpe", "grid"}
    return sorted(names)


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host. A killed but not yet reaped process (a zombie) counts as gone;
    ``/proc`` is read for that only when it shows this process's own PID namespace (in a container it may
    not, and its numbers would then name other processes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if Path("/proc/self").resolve().name != str(os.getpid()):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
