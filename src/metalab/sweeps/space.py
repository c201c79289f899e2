"""The search space of a sweep: ``hydra.sweeper.params`` read into Optuna distributions.

Each entry of ``params`` is a Hydra override value: a sweep (``interval(...)``, ``tag(log, interval(...))``,
``choice(...)``, ``range(...)``) becomes a distribution; a plain value is fixed for every trial. The fixed
entries carry the per-trial budget, because command-line overrides outrank every config file: the
experiment (``+experiment=...``), composed after ``hparams_search``, cannot undo them.

A plain value of a key that is also searched takes the key out of the search space, whichever comes
first: ``data.train.way=5`` on the command line fixes the way that ``hparams_search`` searches. That is
what Hydra's Optuna sweeper does (hydra-optuna-sweeper 1.3, ``OptunaSweeperImpl.sweep``: "Remove fixed
parameters from Optuna search space"), so both routes run the same trials for the same command line.

Parsing goes through the Optuna sweeper plugin's own function, so ``train.py -m`` and ``metalab sweep``
read a yaml file the same way; this module adds the checks that turn a bad space into one clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydra.errors import HydraException
from optuna.distributions import BaseDistribution

from metalab.errors import ConfigError


@dataclass(frozen=True)
class SearchSpace:
    """Distributions to sample (``{key: distribution}``) and overrides fixed for every trial."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]

    def trial_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Command-line overrides of one trial: the fixed entries, then the sampled ``params``."""
        return [f"{k}={v}" for k, v in self.fixed.items()] + [f"{k}={_override_value(v)}" for k, v in params.items()]


def read_search_space(params: Mapping[str, Any] | None, extra_arguments: list[str] = ()) -> SearchSpace:
    """Parse ``hydra.sweeper.params`` (plus sweep arguments from the command line).

    Later entries replace earlier ones of the same kind; a key with a fixed value anywhere is not searched.
    Raises :class:`ConfigError` for an empty space (nothing to search) and for an entry Hydra's override
    grammar cannot parse, naming the key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    entries = [f"{k}={v}" for k, v in (params or {}).items()] + list(extra_arguments)
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for entry in entries:
        key = entry.split("=", 1)[0]
        try:
            override = parser.parse_override(entry)
            value = create_optuna_distribution_from_override(override)
        except (HydraException, ValueError, AssertionError, NotImplementedError) as error:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: cannot read {entry.split('=', 1)[-1]!r} "
                f"({_first_line(error)}); write e.g. interval(0.001, 0.1), "
                "tag(log, interval(1e-4, 1e-2)), choice(16, 32) or range(1, 10)"
            ) from None
        if isinstance(value, BaseDistribution):
            _check_distribution(key, value)
            distributions[key] = value
        else:
            fixed[key] = value
    for key in fixed:  # a fixed value wins over a sweep of the same key, as in Hydra's sweeper
        distributions.pop(key, None)
    if not distributions:
        raise ConfigError(
            "hydra.sweeper.params has nothing to search: give at least one entry such as "
            "learner.optimizer.lr: tag(log, interval(1e-4, 1e-2)) (see conf/hparams_search/)"
        )
    return SearchSpace(distributions, fixed)


def is_sweep(override: str) -> bool:
    """Whether a command-line override sweeps (``key=choice(...)``, ``key=1,2``); a malformed one is a ConfigError."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except HydraException as error:
        key, _, value = override.partition("=")
        raise ConfigError(f"{key}: cannot read {value!r} ({_first_line(error)})") from None


def _check_distribution(key: str, distribution: BaseDistribution) -> None:
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    if low is not None and high is not None and low > high:
        raise ConfigError(f"hydra.sweeper.params.{key}: the interval is empty (low {low} > high {high})")
    choices = getattr(distribution, "choices", None)
    if choices is not None and len(choices) == 0:
        raise ConfigError(f"hydra.sweeper.params.{key}: choice() needs at least one value")


def _override_value(value: Any) -> str:
    """A sampled value as Hydra override text (floats in full precision; None as null)."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
