"""One training run: compose objects from the config, fit, test, and write the run's record.

``train.py`` is a thin Hydra entry point around :func:`train`. Everything here is instantiated from
config (``_target_``); this module holds no algorithm.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from metalab import kernels
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from metalab.callbacks import TrainThroughput
from metalab.environment import environment_report
from metalab.errors import ConfigError, MetalabError
from metalab.precision import PrecisionChoice, resolve_precision
from metalab.runtime import retain_freed_memory


def _wandb_mode() -> str:
    """``online`` only if the user has logged in (API key in the environment or in ~/.netrc)."""
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    return "online" if logged_in else "offline"


OmegaConf.register_new_resolver("metalab_wandb_offline", lambda: _wandb_mode() == "offline", replace=True)


def train(cfg: DictConfig) -> float | None:
    """Fit and test the learner described by ``cfg``; return ``cfg.optimized_metric`` (for sweeps)."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("kernels"):
        kernels.set_backend(cfg.kernels.backend)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    if cfg.get("retain_freed_memory"):
        retain_freed_memory()
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    precision = resolve_precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator"))
    _announce(precision)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    learner: L.LightningModule = instantiate(cfg.learner, backbone=instantiate(cfg.model))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    for logger in loggers:  # the whole resolved config, so a W&B run carries it (not only the module's hparams)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if not loggers:  # Lightning's LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    throughput = next((c for c in callbacks if isinstance(c, TrainThroughput)), None)
    trainer: L.Trainer = instantiate(cfg.trainer, precision=precision.precision, callbacks=callbacks,
                                     logger=loggers or False)

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        start = time.perf_counter()
        trainer.fit(learner, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
        metrics["train/wall_seconds"] = time.perf_counter() - start
        metrics.update(_scalars(trainer.callback_metrics))
    if throughput is not None:
        metrics["train/episodes_per_s"] = throughput.episodes_per_second
    if cfg.get("test", True):
        trainer.test(learner, datamodule=datamodule, ckpt_path=None if cfg.get("train", True) else resolve_ckpt_path(cfg))
        metrics.update(_scalars(trainer.callback_metrics))

    record = {"metrics": metrics, "targets": OmegaConf.to_container(cfg.targets, resolve=True) if cfg.get("targets") else {},
              "global_step": trainer.global_step, "seed": cfg.seed, "precision": precision.record(),
              "environment": environment_report()}
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    _print_summary(metrics, record["targets"], output_dir, throughput.unit if throughput else "episodes")
    key = cfg.get("optimized_metric")
    if key and key not in metrics:
        raise ConfigError(f"optimized_metric={key!r} was not produced; the run logged: {', '.join(sorted(metrics))}")
    return metrics.get(key) if key else None


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a :class:`MetalabError` raised by a constructor comes out as
    itself (Hydra wraps it in an InstantiationException, which would end in a traceback)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MetalabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last``: the newest ``last.ckpt`` among this task's runs; otherwise the path as given."""
    path = cfg.get("ckpt_path")
    if path != "last":
        if path and not Path(path).is_file():
            raise ConfigError(f"ckpt_path={path!r} is not allowed: no such checkpoint file")
        return path
    runs = Path(cfg.paths.log_dir) / cfg.task_name
    found = sorted(runs.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"ckpt_path=last found no checkpoints/last.ckpt under {runs}; start the run without it")
    print(f"[metalab] resuming from {found[-1]}")
    return str(found[-1])


def _announce(precision: PrecisionChoice) -> None:
    """Say at the start which precision the run uses and why (it decides speed by up to 10x on CPU)."""
    print(f"[metalab] precision: {precision.precision} ({precision.reason})")
    if precision.warning:
        print(f"[metalab] warning: {precision.warning}", file=sys.stderr)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1 or isinstance(v, float)}


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
