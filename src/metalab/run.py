"""One training run: compose objects from the config, fit, test, and write the run's record.

``train.py`` is a thin Hydra entry point around :func:`train`. Everything here is instantiated from
config (``_target_``); this module holds no algorithm.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, Timer
from lightning.pytorch.trainer.states import RunningStage
from omegaconf import DictConfig, OmegaConf

from metalab import kernels
from metalab.budget import FitHorizonToTimeBudget
from metalab.callbacks import FinalStateCheckpoint, StopOnSignal, TrainThroughput
from metalab.callbacks.diagnosis import alerts_of, diagnosis_summary_of, stop_reason_of
from metalab.config_checks import check_run_config, instantiation_message
from metalab.environment import environment_report
from metalab.errors import ConfigError, MetalabError
from metalab.noise import finish_wandb, quiet_third_party
from metalab.plain_loop import LoopSettings, PlainRun, parse_duration
from metalab.precision import PrecisionChoice, fixed_precision, measure_precision, resolve_precision
from metalab.report.identity import fingerprint_config
from metalab.report.records import git_commit
from metalab.runtime import retain_freed_memory


def _wandb_mode() -> str:
    """``online`` only if the user has logged in (API key in the environment or in ~/.netrc)."""
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    return "online" if logged_in else "offline"


OmegaConf.register_new_resolver("metalab_wandb_offline", lambda: _wandb_mode() == "offline", replace=True)


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> float | None:
    """Fit and test the learner described by ``cfg``; return ``cfg.optimized_metric`` (for sweeps).

    ``extra_callbacks``: objects that cannot come from config, such as a sweep's pruning callback, which
    holds its live Optuna trial."""
    check_run_config(cfg)  # seed, threads, max_time, optimisers: before anything is written or built
    quiet_third_party()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("kernels"):
        kernels.set_backend(cfg.kernels.backend)
    if cfg.get("cpu_threads") is not None:
        torch.set_num_threads(int(cfg.cpu_threads))
    if cfg.get("retain_freed_memory"):
        retain_freed_memory()
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    objects = build_run(cfg, extra_callbacks)
    precision, learner, callbacks, trainer = objects.precision, objects.learner, objects.callbacks, objects.trainer
    for logger in objects.loggers:  # the whole resolved config, so a W&B run carries it (not only the module's hparams)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    throughput = next((c for c in callbacks if isinstance(c, TrainThroughput)), None)

    ckpt_path = resolve_ckpt_path(cfg)
    if not cfg.get("train", True) and ckpt_path is None:
        raise ConfigError(
            "train=false is not allowed without ckpt_path: give the checkpoint to test "
            "(ckpt_path=<run>/checkpoints/last.ckpt or ckpt_path=last)"
        )
    if not isinstance(learner, L.LightningModule):  # a metalab.plain_loop.PlainRun (a search)
        metrics, record = _plain_fit_and_test(cfg, objects, output_dir, ckpt_path)
        global_step = learner.global_step
    else:
        metrics, record = _fit_and_test(cfg, objects, output_dir, ckpt_path)
        global_step = trainer.global_step

    record.update(
        {
            "metrics": metrics,
            "global_step": global_step,
            "seed": cfg.seed,
            # what made it: the config's identity (metalab.report.identity) and the code version
            "fingerprint": fingerprint_config(cfg, precision.precision),
            "code": git_commit(),
            "targets": OmegaConf.to_container(cfg.targets, resolve=True) if cfg.get("targets") else {},
            "precision": precision.record(),
            "environment": environment_report(),
        }
    )
    alerts = alerts_of(callbacks)
    if alerts is not None:  # what the diagnosis found and did (metalab.callbacks.diagnosis)
        record["alerts"] = alerts
        record["diagnosis"] = diagnosis_summary_of(callbacks)
    run_record = getattr(learner, "run_record", None)  # what a learner adds beyond scalars (e.g. a NAS genotype)
    if callable(run_record):
        record.update(run_record())
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    _print_summary(metrics, record["targets"], output_dir, throughput.unit if throughput else "episodes")
    finish_wandb(objects.loggers)
    key = cfg.get("optimized_metric")
    if key and key not in metrics:
        raise ConfigError(f"optimized_metric={key!r} was not produced; the run logged: {', '.join(sorted(metrics))}")
    return metrics.get(key) if key else None


def _fit_and_test(
    cfg: DictConfig, objects: RunObjects, output_dir: Path, ckpt_path: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lightning's ``Trainer.fit`` and ``Trainer.test``; the metrics and the record's stop and checkpoint entries."""
    datamodule, learner, callbacks, trainer = objects.datamodule, objects.learner, objects.callbacks, objects.trainer
    throughput = next((c for c in callbacks if isinstance(c, TrainThroughput)), None)
    metrics: dict[str, Any] = {}
    record: dict[str, Any] = {}
    if cfg.get("train", True):
        start = time.perf_counter()
        trainer.fit(learner, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics["train/wall_seconds"] = time.perf_counter() - start
        metrics.update(_scalars(trainer.callback_metrics))
        record["stopped"] = _why_training_stopped(trainer, callbacks)
        record["checkpoint"] = _final_checkpoint(trainer, callbacks, output_dir, ckpt_path)
    else:
        record["checkpoint"] = {"path": _shown_path(ckpt_path, output_dir), "global_step": checkpoint_step(ckpt_path)}
    if throughput is not None and math.isfinite(throughput.episodes_per_second):  # NaN: too few steps to time
        metrics["train/episodes_per_s"] = throughput.episodes_per_second
    if cfg.get("test", True):
        # Lightning's table shows a metric logged once under every test loader: ours shows it once
        results = trainer.test(
            learner, datamodule=datamodule, ckpt_path=None if cfg.get("train", True) else ckpt_path, verbose=False
        )
        metrics.update(_scalars(trainer.callback_metrics))
        _print_test_metrics(results)
    return metrics, record


def _plain_fit_and_test(
    cfg: DictConfig, objects: RunObjects, output_dir: Path, ckpt_path: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain loop (:mod:`metalab.plain_loop`) for a learner with no gradient step, with the same budget keys,
    loggers, signal handling, checkpoint file and record as a Lightning run."""
    learner, trainer = objects.learner, objects.trainer
    if objects.datamodule is not None:
        raise ConfigError(
            f"data={type(objects.datamodule).__name__} is not allowed for {type(learner).__name__}: "
            "it makes its own data (set data: null)"
        )
    settings = LoopSettings(
        output_dir,
        max_steps=trainer.max_steps,
        max_seconds=parse_duration(cfg.trainer.get("max_time")),
        log_every_n_steps=int(cfg.trainer.get("log_every_n_steps") or 1),
        fast_dev_run=int(trainer.fast_dev_run or 0),
        loggers=objects.loggers,
        signals=next((c for c in objects.callbacks if isinstance(c, StopOnSignal)), None),
    )
    metrics: dict[str, Any] = {}
    record: dict[str, Any] = {}
    if cfg.get("train", True):
        start = time.perf_counter()
        logged, record["stopped"] = learner.fit(settings, ckpt_path)
        metrics["train/wall_seconds"] = time.perf_counter() - start
        metrics.update(logged)
        saved = settings.checkpoint_dir / "last.ckpt"
        record["checkpoint"] = (
            {"path": _shown_path(saved, output_dir), "global_step": checkpoint_step(saved)}
            if not settings.fast_dev_run
            else {
                "path": None,
                "global_step": None,
                "note": "no last.ckpt was written (trainer.fast_dev_run (debug) writes no checkpoint)",
            }
        )
    else:
        learner.restore(ckpt_path)
        record["checkpoint"] = {"path": _shown_path(ckpt_path, output_dir), "global_step": checkpoint_step(ckpt_path)}
    if cfg.get("test", True):
        metrics.update(learner.test(settings))
    return metrics, record


@dataclass
class RunObjects:
    """What one run is made of, built from its config."""

    precision: PrecisionChoice
    datamodule: L.LightningDataModule | None  # None for a learner that makes its own data (a search)
    learner: L.LightningModule | PlainRun
    callbacks: list[Any]
    loggers: list[Any]
    trainer: L.Trainer


def build_run(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = (), measure: bool = True) -> RunObjects:
    """Instantiate every ``_target_`` of a run, loading no data (that happens in the data module's setup).

    Apart from :func:`train` so that a test can build every experiment exactly as a run does: a typo in a
    target or a keyword a class does not take then fails ``make test``, not a user's run. ``measure=False``
    leaves ``trainer.precision: auto`` at fp32 instead of timing a few steps (building, not running)."""
    precision = resolve_precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator"))
    datamodule = instantiate(cfg.data, "data") if cfg.get("data") else None
    learner = instantiate(cfg.learner, "learner", **learner_parts(cfg))
    precision = fixed_precision(precision, learner)  # a learner whose results must not depend on the CPU: fp32
    if measure and isinstance(learner, L.LightningModule) and datamodule is not None:
        precision = measure_precision(precision, learner, datamodule)  # auto on a CPU with native bf16: the faster
    _announce(precision)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c] + list(extra_callbacks)
    if cfg.get("diagnosis") and isinstance(learner, L.LightningModule):  # conf/diagnosis/ (empty: diagnosis=off);
        callbacks.append(instantiate(cfg.diagnosis, "diagnosis"))  # the plain loop (a search) takes no step to heal
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if not loggers:  # Lightning's LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(
        cfg.trainer,
        "trainer",
        precision=precision.precision,
        callbacks=callbacks,
        logger=loggers or False,
        **data_trainer_arguments(cfg, datamodule),
    )
    return RunObjects(precision, datamodule, learner, callbacks, loggers, trainer)


def learner_parts(cfg: DictConfig) -> dict[str, Any]:
    """What the learner is built around: the network (``model`` -> ``backbone``) and, for a search, the
    ``problem`` it optimises, each under its own name; a config without one passes nothing for it."""
    parts = {}
    if cfg.get("model"):
        parts["backbone"] = instantiate(cfg.model, "model")
    if cfg.get("problem"):
        parts["problem"] = instantiate(cfg.problem, "problem")
    return parts


def data_trainer_arguments(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Trainer arguments the data decides (a task stream: one fit over all its tasks' epochs); a config value
    that differs is replaced, and the run says so."""
    arguments = datamodule.trainer_arguments() if callable(getattr(datamodule, "trainer_arguments", None)) else {}
    for key, value in arguments.items():
        given = cfg.trainer.get(key)
        if given not in (None, -1, value) and not (key == "reload_dataloaders_every_n_epochs" and given == 0):
            print(
                f"[metalab] trainer.{key}={given} replaced by {value} (decided by the data: "
                f"{type(datamodule).__name__}.trainer_arguments)"
            )
    return arguments


def instantiate(node: Any, key: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a :class:`MetalabError` raised by a constructor comes out as
    itself (Hydra wraps it in an InstantiationException, which would end in a traceback), a
    :class:`ConfigError` about ``name=...`` naming its full key (``learner.searcher.mutation_rate``),
    Lightning's MisconfigurationException (e.g. ``max_steps=-7``) as a :class:`ConfigError` naming
    ``key.<field>``, and a misspelt ``_target_`` or a keyword its class does not take as one line."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, (MetalabError, MisconfigurationException)):
            cause = cause.__cause__
        if isinstance(cause, MisconfigurationException):
            raise ConfigError(_name_keys(str(cause), node, key)) from None
        if isinstance(cause, ConfigError) and key:
            raise ConfigError(_qualified(str(cause), node, key)) from None
        if cause is not None:
            raise cause from None
        message = instantiation_message(error, key)
        if message:
            raise ConfigError(message) from None
        raise


def _qualified(message: str, node: Any, key: str) -> str:
    """``mutation_rate=5 is not allowed: mutation_rate must be ...`` -> the same with the dotted key
    ``learner.searcher.mutation_rate``, when the name is the leaf of exactly one key under ``node``."""
    match = re.match(r"(\w+)=", message)
    if match is None or not isinstance(node, DictConfig):
        return message
    tree = OmegaConf.to_container(node, resolve=False)  # `???` and interpolations stay leaves, unresolved
    paths = [p for p in _leaf_paths(tree, key) if p.rsplit(".", 1)[-1] == match[1]]
    if len(paths) != 1:
        return message
    return re.sub(rf"(?<![\w.]){match[1]}(?==| must\b)", paths[0], message)


def _leaf_paths(tree: dict[str, Any], prefix: str) -> list[str]:
    paths = []
    for name, child in tree.items():
        paths += _leaf_paths(child, f"{prefix}.{name}") if isinstance(child, dict) else [f"{prefix}.{name}"]
    return paths


def _name_keys(message: str, node: Any, key: str | None) -> str:
    """Lightning's "`max_steps` must be ..." as "trainer.max_steps must be ..." on one line."""
    if key:
        message = re.sub(r"`(\w+)`", lambda m: f"{key}.{m[1]}" if m[1] in node else m[0], message)
        if f"{key}." not in message:
            message = f"{key}: {message}"
    return " ".join(message.split())


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last``: the newest ``last.ckpt`` among this task's runs; otherwise the path as given.

    The file is opened here, so a path that is not a Lightning checkpoint is one clear error up front.
    """
    path = cfg.get("ckpt_path")
    if not path:
        return None
    if path == "last":
        runs = Path(cfg.paths.log_dir) / cfg.task_name
        found = sorted(runs.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last found no checkpoints/last.ckpt under {runs}; start the run without it")
        print(f"[metalab] resuming from {found[-1]}")
        path = str(found[-1])
    elif not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path!r} is not allowed: no such checkpoint file")
    checkpoint_step(path)
    return path


def checkpoint_step(path: str | Path) -> int:
    """The global step stored in a Lightning checkpoint; :class:`ConfigError` if the file is not one."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any unpickling/zip failure means: not a checkpoint
        first_line = (str(error).splitlines() or ["unreadable"])[0]
        raise ConfigError(
            f"ckpt_path={str(path)!r} is not allowed: not a Lightning checkpoint "
            f"(torch.load: {type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={str(path)!r} is not allowed: not a Lightning checkpoint (no state_dict)")
    return int(checkpoint.get("global_step", 0))


def _final_checkpoint(
    trainer: L.Trainer, callbacks: list[Any], output_dir: Path, resumed_from: str | None
) -> dict[str, Any]:
    """Which checkpoint holds the weights the test metrics come from (the test follows fit directly).

    A run resumed from a checkpoint whose training had already ended trains no step and writes none:
    its weights are those of ``resumed_from``.
    """
    saver = next((c for c in callbacks if isinstance(c, FinalStateCheckpoint)), None)
    path = saver.last_model_path if saver is not None else ""
    if (not path or not Path(path).is_file()) and resumed_from and checkpoint_step(resumed_from) == trainer.global_step:
        path = resumed_from
    if not path or not Path(path).is_file():
        why = (
            "trainer.fast_dev_run (debug) writes no checkpoint"
            if trainer.fast_dev_run
            else "callbacks.model_checkpoint is not a FinalStateCheckpoint"
        )
        return {"path": None, "global_step": None, "note": f"no last.ckpt was written ({why})"}
    step = checkpoint_step(path)
    if step != trainer.global_step:  # the invariant of issue 25; a failure here is a bug, not a user error
        raise RuntimeError(f"{path} holds step {step} but training ended at step {trainer.global_step}")
    return {"path": _shown_path(path, output_dir), "global_step": step}


def _why_training_stopped(trainer: L.Trainer, callbacks: list[Any]) -> dict[str, Any]:
    """What ended training and where: a signal, max_time, max_steps, max_epochs or a callback (early stopping)."""
    signal_stop = next((c.received for c in callbacks if isinstance(c, StopOnSignal) and c.received), None)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    budget = next((c for c in callbacks if isinstance(c, FitHorizonToTimeBudget)), None)
    if signal_stop:
        reason = f"signal {signal_stop}"
    elif trainer.fast_dev_run:
        reason = f"trainer.fast_dev_run={int(trainer.fast_dev_run)} (debug: that many batches per stage)"
    elif stop_reason_of(callbacks):
        reason = stop_reason_of(callbacks)
    elif timer is not None and (timer.time_remaining() or 0) <= 0:
        reason = "max_time"
    elif budget is not None and budget.reached(trainer):
        reason = "max_steps (the schedule's horizon fitted to max_time)"
    elif max_steps not in (None, -1) and trainer.global_step >= max_steps:
        reason = "max_steps"
    elif max_epochs not in (None, -1) and trainer.current_epoch >= max_epochs:
        reason = "max_epochs"
    else:
        reason = "a callback (e.g. early stopping)"
    return {
        "reason": reason,
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "train_seconds": timer.time_elapsed(RunningStage.TRAINING) if timer is not None else None,
        "time_budget": budget.state_dict() if budget is not None else None,
    }


def _shown_path(path: str | Path, output_dir: Path) -> str:
    """``path`` relative to the run directory when inside it (records carry no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(output_dir.resolve()))
    except ValueError:
        return str(path)


def _announce(precision: PrecisionChoice) -> None:
    """Say at the start which precision the run uses and why (it decides speed by up to 10x on CPU)."""
    print(f"[metalab] precision: {precision.precision} ({precision.reason})")
    if precision.warning:
        print(f"[metalab] warning: {precision.warning}", file=sys.stderr)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1 or isinstance(v, float)}


def _print_test_metrics(results: list[dict[str, float]]) -> None:
    """Every test metric once, whatever the number of test loaders (a run testing 5w1s and 5w5s logs each
    setting's metrics once, which Lightning's table repeated under DataLoader 0 and DataLoader 1)."""
    merged: dict[str, float] = {}
    for result in results:
        merged.update(result)
    if not merged:
        return
    width = max(map(len, merged))
    rows = [f"  {key:<{width}}  {value:.6g}" for key, value in sorted(merged.items())]
    print("[metalab] test metrics\n" + "\n".join(rows))


def _print_summary(metrics: dict[str, float], targets: dict[str, Any], output_dir: Path, speed_unit: str) -> None:
    """Print test scores beside the paper's figure, one line each; few-shot scores with their 95% CI
    over test episodes (continual runs have one score per scenario and no CI)."""
    lines = []
    for key in sorted(k for k in metrics if k.startswith("test/") and k.endswith(("/acc", "/mse"))):
        name, score = key.split("/")[1:3]
        ci = metrics.get(f"{key}_ci95", float("nan"))
        target = targets.get(name) if isinstance(targets.get(name), dict) else {}
        extra = f"   (paper: {target['paper']})" if target.get("paper") is not None else ""
        unit = " %" if score == "acc" else f" {score}"
        spread = f" +- {ci:.2g}" if math.isfinite(ci) else ""
        lines.append(f"  {name:>8}: {metrics[key]:.4g}{spread}{unit}{extra}")
    if math.isfinite(metrics.get("train/episodes_per_s", float("nan"))):
        lines.append(f"  training speed: {metrics['train/episodes_per_s']:.2f} {speed_unit}/s")
    print("[metalab] results\n" + "\n".join(lines) + f"\n  run dir: {output_dir}")
