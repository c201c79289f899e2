"""Turn Hydra's multi-line composition errors into one ``error:`` line before the run starts.

Hydra reports an unknown experiment or a misspelt key with a search-path listing and a hint about
HYDRA_FULL_ERROR. We compose the config once up front and, if that fails, print the gist: the key or
option that is wrong and what is allowed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


def exit_on_bad_overrides(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Compose ``config_name`` with the command-line overrides; on failure print one line and exit 2.

    Skipped when Hydra flags other than ``-m`` are given (``--cfg``, ``--help``, ...): Hydra then reports
    as usual. With ``-m``, the overrides that are not sweeps (``a=1,2``, ``choice(...)``) are checked, so
    an unknown ``hparams_search`` or sampler is one line too.
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return
    message = _sweeper_param_override([a for a in argv if not a.startswith("-")])
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    overrides = [a for a in argv if not a.startswith("-") and not _is_sweep(a)]
    conf_dir = Path(sys.argv[0]).resolve().parent / config_dir
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            message = _wrongly_typed_value(config_name, overrides, conf_dir)
    except MissingConfigException as error:
        message = missing_option(error, conf_dir)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        cause = f" ({gist(str(error.__cause__))})" if error.__cause__ else ""
        message = f"{gist(str(error))}{cause}"
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _wrongly_typed_value(config_name: str, overrides: list[str], conf_dir: Path) -> str | None:
    """A value override that puts text where the config holds a number (``learner.optimizer.lr=fast``).

    The numbers are read from the config composed with the group choices alone (``+experiment=...``,
    ``data=...``), so an experiment's own values count; the message names the key and the value it had.
    """
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [o.input_line for o in parsed if _is_group_choice(o.key_or_group, conf_dir)]
    base = compose(config_name=config_name, overrides=groups)
    for override in parsed:
        if override.is_delete() or override.is_sweep_override() or _is_group_choice(override.key_or_group, conf_dir):
            continue
        value, before = override.value(), OmegaConf.select(base, override.key_or_group, default=None)
        if isinstance(before, (int, float)) and not isinstance(before, bool) and isinstance(value, str):
            return (
                f"{override.key_or_group}={value!r} is not allowed: {override.key_or_group} must be a number "
                f"(the config has {before!r})"
            )
    return None


def _sweeper_param_override(overrides: list[str]) -> str | None:
    """``hydra.sweeper.params.learner.optimizer.lr=interval(...)``: Hydra reads the dotted name as nested
    keys (and the unquoted range as a sweep of Hydra's own config), but ``params`` is one flat mapping
    keyed by dotted names. Say how to write it instead of Hydra's two-paragraph message."""
    prefix = "hydra.sweeper.params."
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not key.startswith(prefix) or not sep:
            continue
        name, space = key.removeprefix(prefix), value.strip().strip("'\"")
        return (
            f"{key}={value} is not allowed: hydra.sweeper.params is one mapping keyed by dotted names; "
            f"set an entry with 'hydra.sweeper.params={{{name}:\"{space}\"}}' (quoted as shown) or search "
            f"the key itself: '{name}={space}'"
        )
    return None


def _is_group_choice(key: str, conf_dir: Path) -> bool:
    """``data``, ``learner/method``, ``experiment``: keys that choose a config file, not set a value."""
    return "/" in key or (conf_dir / key).is_dir()


def _is_sweep(override: str) -> bool:
    """Whether an override sweeps several values (only a sweeper can read it); unparsable ones are not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except HydraException:
        return False


def missing_option(error: MissingConfigException, conf_dir: Path) -> str:
    """``unknown experiment 'omniglot/x'; available: ...`` for a config group option that does not exist."""
    missing = str(error.missing_cfg_file or "")
    group, _, name = missing.rpartition("/")
    listed = [
        line.strip()
        for line in str(error).splitlines()  # option names, not the search path's lines
        if line.startswith("\t") and "=" not in line and " " not in line.strip()
    ]
    if group.startswith("hydra/") and listed:  # e.g. hydra/sweeper/sampler: Hydra lists plugin options too
        return f"unknown {group} {name!r}; available: {', '.join(sorted(listed))}"
    top = group.split("/")[0] if group else ""
    options = (
        sorted(str(p.relative_to(conf_dir / top).with_suffix("")) for p in (conf_dir / top).rglob("*.yaml"))
        if top and (conf_dir / top).is_dir()
        else []
    )
    label = top or "config"
    what = missing.removeprefix(f"{top}/") if top else missing
    return f"unknown {label} {what!r}; available: {', '.join(options) or 'none'}"


def gist(message: str) -> str:
    """The informative lines of a Hydra/OmegaConf message, joined on one line."""
    lines = []
    for line in message.splitlines():
        line = line.strip()
        if not line or line.startswith(("full_key", "object_type", "reference_type", "Set the environment")):
            continue
        lines.append(line)
    return " ".join(lines)
