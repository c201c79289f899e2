"""Run identity: which computation a run record holds, so a record made by another config is never shown
as current.

A run's *fingerprint* is a digest of its fully resolved config without the keys that cannot change a
result: where files go (``paths``, run and checkpoint folders, loggers), where data is read from (every
``data_dir``: the files are checked against their sha256), how many threads compute it, what the console
shows, and what the report compares with (``targets``, ``optimized_metric``). Everything else is part of the
identity, with two normalisations: a key of a ``_target_`` node whose value is the default of that
parameter of the target's signature is left out, because giving it or not makes the same call (a newer
config that spells out ``trainer.max_steps: -1`` computes what an older one that left it out did); and
``trainer.precision: auto`` counts as the precision it resolved to (the run's ``metrics.json`` says which).
A key a newer config adds with any other value makes every record made before it stale.

The self-diagnosis settings (``diagnosis``, :mod:`metalab.callbacks.diagnosis`) are left out too, on a
condition that is checked rather than assumed: the callback only observes (it reads losses, gradient norms
and inputs, copies state for its snapshots, and uses no random numbers) until it acts, so a run in which it
took no action is bit for bit the run without it (``tests/callbacks/test_diagnosis_identity.py`` trains the
same tiny runs with diagnosis on and off and compares every weight and metric), and every action it takes
(a skipped batch, a rollback, a lowered rate, an early stop) is an alert in that run's ``metrics.json``,
which the report shows: a row with such a run is marked healed (``metalab.report.collect.healed_actions``),
never shown as a clean result. A record made with diagnosis off therefore stands for the run with diagnosis
on exactly when the detectors would not have fired; that they stay quiet on clean runs is what
``experiments/diagnosis`` measures.

The digest is taken from the YAML text of the resolved config, the same text ``train.py`` writes to
``config_resolved.yaml``, so the fingerprint of a committed record can be recomputed from its file and
compared with the fingerprint of the run a study would make now (:func:`planned_fingerprint`). The code
version a record was made with (commit, dirty flag) is kept beside it for reading, not compared: a study
cannot tell which code changes matter, a config difference always does.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Dotted keys left out of the identity (a key drops its whole subtree).
IGNORED_KEYS = (
    "hydra",
    "paths",
    "logger",
    "ckpt_path",
    "cpu_threads",
    "targets",
    "optimized_metric",
    "task_name",
    "retain_freed_memory",  # allocator behaviour: speed, not values
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",  # how often metrics are logged, not what is trained
    "diagnosis",  # observes until it acts, and its actions are in the record's alerts (see the docstring)
    # callbacks that save, time, display or restore state, but never change what is computed
    "callbacks.model_checkpoint",
    "callbacks.stop_on_signal",
    "callbacks.rng_state",
    "callbacks.throughput",
    "callbacks.progress_bar",
    "callbacks.progress",
    "callbacks.lr_monitor",
)
IGNORED_NAMES = ("data_dir",)  # at any depth: where data files are read from
PLACEHOLDER_PATHS = {"root_dir": ".", "log_dir": "./logs", "output_dir": "<run>"}


_NO_DEFAULT = object()


@functools.cache
def _defaults(target: str) -> dict[str, Any]:
    """``{parameter: default}`` of the callable a ``_target_`` names; empty if it cannot be imported."""
    from hydra.utils import get_object

    try:
        found = get_object(target)
        signature = inspect.signature(found.__init__ if inspect.isclass(found) else found)
    except Exception:  # not importable here, or no signature: keep every key (never merge unknowns)
        return {}
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _is_default(target: Any, key: str, value: Any) -> bool:
    if not isinstance(target, str) or key.startswith("_"):
        return False
    default = _defaults(target).get(key, _NO_DEFAULT)
    return default is not _NO_DEFAULT and type(default) is type(value) and default == value


def _drop(node: Any, prefix: str = "") -> Any:
    if isinstance(node, dict):
        kept = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in IGNORED_KEYS or key in IGNORED_NAMES or _is_default(node.get("_target_"), key, value):
                continue
            kept[str(key)] = _drop(value, f"{dotted}.")
        return kept
    if isinstance(node, list):
        return [_drop(value, prefix) for value in node]
    return node


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config (a plain mapping) that defines what a run computes."""
    return _drop(config)


def fingerprint_yaml(text: str, precision_used: str | None = None) -> str:
    """The fingerprint of a resolved config given as YAML text (``config_resolved.yaml``). ``precision_used``:
    the precision ``trainer.precision: auto`` resolved to (a run's ``metrics.json`` says), which is what it
    computed in, so an ``auto`` run that ran in fp32 is the same run as one that asked for fp32."""
    config = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    if precision_used and isinstance(config.get("trainer"), dict) and config["trainer"].get("precision") == "auto":
        config["trainer"]["precision"] = precision_used
    canonical = json.dumps(identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fingerprint_record(folder: Path) -> str | None:
    """The fingerprint of the run recorded in ``folder`` (its ``config_resolved.yaml``, and the precision its
    ``metrics.json`` says it used); None if it has no config file."""
    try:
        text = (folder / "config_resolved.yaml").read_text()
    except OSError:
        return None
    try:
        used = (json.loads((folder / "metrics.json").read_text()).get("precision") or {}).get("used")
    except (OSError, ValueError, AttributeError):
        used = None
    return fingerprint_yaml(text, used)


def fingerprint_config(cfg: DictConfig, precision_used: str | None = None) -> str:
    """The fingerprint of a live run config, as :func:`train` writes it (interpolations resolved)."""
    return fingerprint_yaml(OmegaConf.to_yaml(cfg, resolve=True), precision_used)


def planned_yaml(cfg: DictConfig) -> str:
    """The resolved YAML of a config composed outside a Hydra run (a study's plan): the keys that need
    Hydra's run-time context (``paths``, ``hydra``) or a resolver of the running process (``logger``) are
    replaced or removed before resolving; they are not part of the identity anyway."""
    plan = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with_paths = OmegaConf.to_container(plan.get("paths") or OmegaConf.create({}), resolve=False)
    plan.paths = {**with_paths, **PLACEHOLDER_PATHS}
    for key in ("hydra", "logger"):
        plan.pop(key, None)
    return OmegaConf.to_yaml(plan, resolve=True)


def planned_fingerprint(cfg: DictConfig) -> str:
    """The fingerprint of the run a composed config describes (see :func:`planned_yaml`)."""
    return fingerprint_yaml(planned_yaml(cfg))
