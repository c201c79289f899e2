"""Checks of a composed run config that must fail before anything is built, loaded or trained.

Each check names the key and what is allowed, as :class:`~metalab.errors.ConfigError` does everywhere,
because the libraries underneath fail late and vaguely on the same values: numpy raises a bounds error
deep in ``seed_everything`` for ``seed=-1``, torch's ``set_num_threads`` a RuntimeError for
``cpu_threads=-2`` (and ``cpu_threads=0`` used to mean "all cores"), torch's optimisers "Invalid learning
rate" only when Lightning calls ``configure_optimizers`` (49 lines of traceback), and Lightning's Timer
names ``Timer(duration=...)`` rather than ``trainer.max_time``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from metalab.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit
DURATION = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")  # Lightning's Timer format, DD:HH:MM:SS
TIMEDELTA_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")
# torch.optim's ValueError text -> the constructor argument it is about and what torch allows
OPTIMIZER_ARGUMENTS = {
    "learning rate": ("lr", ">= 0"),
    "epsilon": ("eps", ">= 0"),
    "beta": ("betas", "a pair of numbers in [0, 1)"),
    "momentum": ("momentum", ">= 0"),
    "weight_decay": ("weight_decay", ">= 0"),
    "weight decay": ("weight_decay", ">= 0"),
    "alpha": ("alpha", ">= 0"),
    "rho": ("rho", "in [0, 1]"),
    "lr_decay": ("lr_decay", ">= 0"),
}


def check_run_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value of ``cfg`` that a run cannot use."""
    check_seed(cfg.get("seed"))
    check_cpu_threads(cfg.get("cpu_threads"))
    trainer = cfg.get("trainer") or {}
    check_max_time(trainer.get("max_time") if isinstance(trainer, DictConfig) else None)
    if cfg.get("learner") is not None:
        check_optimizers(cfg.learner, "learner")
    check_diagnosis(cfg.get("diagnosis"))


def check_diagnosis(node: Any) -> None:
    """``diagnosis`` (``conf/diagnosis/``): every section and key known and in range, checked by the rules the
    callback itself uses (:func:`metalab.callbacks.diagnosis.check_settings`), before the run writes anything."""
    if not node:  # diagnosis=off
        return
    if not isinstance(node, DictConfig):
        raise ConfigError(f"diagnosis={node!r} is not allowed: diagnosis must be a config group (default or off)")
    from metalab.callbacks.diagnosis import check_settings  # Lightning: imported only when a run has diagnosis

    settings = OmegaConf.to_container(node, resolve=True)
    settings.pop("_target_", None)
    check_settings(settings)


def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed!r} is not allowed: seed must be an integer in [0, {MAX_SEED}]")


def check_cpu_threads(threads: Any) -> None:
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"cpu_threads={threads!r} is not allowed: cpu_threads must be an integer >= 1 "
            "(torch's intra-op threads) or null (torch's default: all cores)"
        )


def check_max_time(value: Any) -> None:
    """``trainer.max_time``: null, ``DD:HH:MM:SS`` or a mapping of timedelta fields (Lightning's forms)."""
    if value is None:
        return
    allowed = (
        "null, a duration DD:HH:MM:SS such as 00:02:00:00, or a mapping such as {hours: 2} "
        f"(keys: {', '.join(TIMEDELTA_KEYS)})"
    )
    if isinstance(value, str):
        if DURATION.fullmatch(value.strip()):
            return
    elif isinstance(value, DictConfig):
        fields = OmegaConf.to_container(value)
        if (
            all(
                k in TIMEDELTA_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                for k, v in fields.items()
            )
            and fields
        ):
            return
        value = fields
    raise ConfigError(f"trainer.max_time={value!r} is not allowed: trainer.max_time must be {allowed}")


def _optimizer_nodes(node: Any, key: str) -> Iterator[tuple[str, DictConfig]]:
    """Every ``torch.optim.<Optimizer>`` partial under ``node`` (schedulers left out), with its dotted key."""
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if isinstance(target, str) and target.startswith("torch.optim.") and ".lr_scheduler." not in target:
            yield key, node
            return
        for child in node.keys():
            if not OmegaConf.is_missing(node, child):  # `???` values are reported by Hydra where they are used
                yield from _optimizer_nodes(node[child], f"{key}.{child}")
    elif isinstance(node, ListConfig):
        for index, value in enumerate(node):
            yield from _optimizer_nodes(value, f"{key}[{index}]")


def check_optimizers(node: DictConfig, key: str) -> None:
    """Build each optimiser of the config on one dummy parameter, so torch's own checks (lr >= 0, betas
    in [0, 1), a keyword the class does not take) fail now and name the config key."""
    for where, optimizer in _optimizer_nodes(node, key):
        probe = [torch.nn.Parameter(torch.zeros(1))]
        try:
            made = hydra.utils.instantiate(optimizer, _partial_=True)
            made(probe)
        except Exception as error:  # torch raises ValueError / TypeError; Hydra wraps a bad _target_
            raise ConfigError(_optimizer_message(error, where, optimizer)) from None


def _optimizer_message(error: Exception, where: str, node: DictConfig) -> str:
    if isinstance(error, InstantiationException):
        return instantiation_message(error, where)
    cause = error.__cause__ or error
    text = " ".join(str(cause).split())
    target = node.get("_target_")
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unexpected:
        name = unexpected[1]
        return (
            f"{where}.{name} is not allowed: {target} takes no argument {name!r} (left over from another "
            f"_target_? remove it with ~{where}.{name})"
        )
    for phrase, (name, allowed) in OPTIMIZER_ARGUMENTS.items():
        if phrase in text.lower() and name in node:
            value = node[name]
            value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            return f"{where}.{name}={value!r} is not allowed: {where}.{name} must be {allowed} ({target}: {text})"
    return f"{where} is not allowed: {target} says: {text}"


def instantiation_message(error: InstantiationException, key: str | None) -> str | None:
    """One line for the two ways a ``_target_`` goes wrong in a config (Hydra's text spans several lines):
    a target that cannot be imported (misspelt), and a keyword its class does not take or a required one
    missing (often a key left over after changing ``_target_``). ``None`` for anything else: an exception
    inside a constructor is a bug to show with its traceback, not a user's mistake."""
    text = str(error)
    full_key = re.search(r"^full_key: (\S+)", text, re.MULTILINE)
    where = full_key[1] if full_key else key
    where = f"{key}.{where}" if key and where and where != key and not where.startswith(f"{key}.") else where
    where = where or "<config>"
    located = re.search(r"Error locating target '([^']+)'", text)
    if located:
        return f"{where}._target_={located[1]!r} is not allowed: {_import_gist(located[1], error)}"
    called = re.search(r"Error in call to target '([^']+)'", text)
    cause = error.__cause__
    if called and isinstance(cause, TypeError):
        detail = " ".join(str(cause).split())
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", detail)
        if unexpected:
            name = unexpected[1]
            return (
                f"{where}.{name} is not allowed: {called[1]} takes no argument {name!r} (left over from "
                f"another _target_? remove it with ~{where}.{name})"
            )
        missing = re.search(r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)$", detail)
        if missing:
            return f"{where} is not allowed: {called[1]} needs {missing[1]} (add {where}.<name>=...)"
    return None


def _import_gist(target: str, error: BaseException) -> str:
    """What is wrong with a dotted path: the module that cannot be imported, or the name its module lacks
    (with the closest names it has)."""
    import difflib
    import importlib

    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except Exception:  # ImportError, or an error while importing a user's module
        module = None
    if module is not None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {' or '.join(f'{module_name}.{c}' for c in close)}?" if close else ""
        return f"module {module_name} has no {name!r}{hint}"
    cause: BaseException | None = error
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    first = (str(cause).strip().splitlines() or ["not found"])[0]
    return f"it cannot be imported ({' '.join(first.split())}); give a dotted path such as torch.optim.SGD"
