"""Model-selection families (``conf/select/<family>.yaml``): candidates, objective and budgets of ``metalab select``.

A family names a categorical search space in the sweeps' own format (``params``, read by
:func:`metalab.sweeps.space.read_search_space`: ``choice(...)`` entries are searched, plain values fixed for
every candidate), where an entry's values may be aliases listed under ``choices`` (each a list of overrides,
e.g. ``protonet: [+experiment=omniglot/protonet_5w1s]``); every combination of the choices is one candidate.
It also says what rungs compare (``objective``, computed on held-out *training* classes or examples), what
the hindsight table reports (``test_metric``), the family's ``default`` candidate, the fidelity that the
budget is counted in (``fidelity``: Lightning epochs resumed from the last checkpoint, or a data size the
candidate is retrained with at each rung) and named ``budgets`` (per-candidate full resource and the halving
schedule). The yaml files are the only place a family exists: adding one needs no code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

from metalab.errors import ConfigError
from metalab.sweeps.halving import rung_steps
from metalab.sweeps.space import SearchSpace, _override_value, read_search_space

FAMILY_DIR = "select"  # conf/select/


@dataclass(frozen=True)
class Candidate:
    """One combination of the family's choices: its name, the sampled params and the overrides they mean."""

    name: str
    params: dict[str, Any]
    overrides: list[str]


@dataclass(frozen=True)
class Budget:
    """A named budget: the full per-candidate resource and the halving schedule that reaches it."""

    name: str
    max_resource: int
    min_resource: int
    reduction_factor: int
    overrides: list[str] = field(default_factory=list)

    @property
    def rungs(self) -> list[int]:
        return rung_steps(self.min_resource, self.reduction_factor, self.max_resource)


@dataclass(frozen=True)
class Fidelity:
    """What one unit of resource is: ``key = resource * unit``; ``resume``: continue from the last checkpoint
    (Lightning epochs) instead of training again from scratch (a data size)."""

    key: str
    unit: int = 1
    resume: bool = True

    def override(self, resource: int) -> str:
        return f"{self.key}={resource * self.unit}"


@dataclass
class Family:
    """A model-selection family read from ``conf/select/<name>.yaml``."""

    name: str
    description: str
    space: SearchSpace
    choices: dict[str, dict[str, list[str]]]
    objective: str
    direction: str
    test_metric: str
    test_overrides: list[str]
    default: dict[str, Any]
    fidelity: Fidelity
    budgets: dict[str, Budget]
    pruner: str

    def candidates(self) -> list[Candidate]:
        """Every combination of the categorical choices, in the order the file lists them."""
        keys = list(self.space.distributions)
        grids = [self.space.distributions[k].choices for k in keys]  # type: ignore[attr-defined]
        return [self.candidate(dict(zip(keys, values, strict=True))) for values in itertools.product(*grids)]

    def candidate(self, params: dict[str, Any]) -> Candidate:
        overrides = [f"{k}={v}" for k, v in self.space.fixed.items()]
        for key, value in params.items():
            overrides += self.choices[key][str(value)] if key in self.choices else [f"{key}={_override_value(value)}"]
        name = "_".join(f"{_short(k)}{v}" if k not in self.choices else str(v) for k, v in params.items())
        return Candidate(name, params, overrides)

    def default_candidate(self) -> Candidate:
        return self.candidate(self.default)

    def budget(self, name: str | None) -> Budget:
        if name is None:
            return next(iter(self.budgets.values()))
        if name not in self.budgets:
            raise ConfigError(
                f"--budget={name!r} is not allowed for family {self.name!r}: must be one of {', '.join(self.budgets)}"
            )
        return self.budgets[name]


def family_names(conf_dir: Path) -> list[str]:
    return sorted(p.stem for p in (conf_dir / FAMILY_DIR).glob("*.yaml"))


def load_family(name: str, conf_dir: Path) -> Family:
    """Read and check ``conf/select/<name>.yaml``; an unknown family or a malformed file is one ConfigError."""
    names = family_names(conf_dir)
    if name not in names:
        raise ConfigError(
            f"family={name!r} is not allowed: must be one of {', '.join(names) or 'none'} "
            f"(the files in conf/{FAMILY_DIR}/)"
        )
    try:
        node = OmegaConf.load(conf_dir / FAMILY_DIR / f"{name}.yaml")
    except Exception as error:  # noqa: BLE001 - yaml's parser errors: the user's file
        raise ConfigError(f"conf/{FAMILY_DIR}/{name}.yaml: cannot be read ({str(error).splitlines()[0]})") from None
    return _family(name, node)


def _family(name: str, node: DictConfig) -> Family:
    where = f"conf/{FAMILY_DIR}/{name}.yaml"
    for key in ("params", "objective", "test_metric", "default", "fidelity", "budgets"):
        if node.get(key) is None:
            raise ConfigError(f"{where}: {key} is missing")
    params = OmegaConf.to_container(node.params, resolve=False)
    space = read_search_space(params)
    choices = {k: {str(a): list(v) for a, v in aliases.items()} for k, aliases in _container(node, "choices").items()}
    _check_categorical(where, space.distributions, choices)
    direction = str(node.get("direction", "maximize"))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{where}: direction={direction!r} is not allowed: must be maximize or minimize")
    default = {str(k): v for k, v in _container(node, "default").items()}
    if set(default) != set(space.distributions) or any(
        v not in space.distributions[k].choices
        for k, v in default.items()  # type: ignore[attr-defined]
    ):
        raise ConfigError(
            f"{where}: default={default} is not allowed: must give one choice of each of {list(space.distributions)}"
        )
    fidelity = Fidelity(**_container(node, "fidelity"))
    budgets = {str(k): Budget(name=str(k), **v) for k, v in _container(node, "budgets").items()}
    for budget in budgets.values():
        budget.rungs  # noqa: B018 - checks the resources (ConfigError)
    return Family(
        name=name,
        description=str(node.get("description", "")).strip(),
        space=space,
        choices=choices,
        objective=str(node.objective),
        direction=direction,
        test_metric=str(node.test_metric),
        test_overrides=list(node.get("test_overrides") or []),
        default=default,
        fidelity=fidelity,
        budgets=budgets,
        pruner=str(node.get("pruner", "synchronous_halving")),
    )


def _check_categorical(where: str, distributions: dict[str, BaseDistribution], choices: dict[str, Any]) -> None:
    for key, distribution in distributions.items():
        if not isinstance(distribution, CategoricalDistribution):
            raise ConfigError(
                f"{where}: params.{key} is not allowed: model selection compares a fixed set of candidates, "
                "so every searched entry must be choice(...)"
            )
        unknown = [str(c) for c in distribution.choices if key in choices and str(c) not in choices[key]]
        if unknown:
            raise ConfigError(
                f"{where}: params.{key} choice {unknown[0]!r} is not allowed: must be one of "
                f"{', '.join(choices[key])} (choices.{key})"
            )


def _container(node: DictConfig, key: str) -> dict[str, Any]:
    value = node.get(key)
    return dict(OmegaConf.to_container(value, resolve=False)) if value is not None else {}  # type: ignore[arg-type]


def _short(key: str) -> str:
    """``model.hidden`` -> ``hidden``: the last part of a dotted key, for candidate names."""
    return key.rsplit(".", 1)[-1]
