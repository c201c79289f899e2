"""User-facing errors.

A :class:`MetalabError` is a mistake in the input (a config value, a data file, an episode that
cannot be built). ``train.py`` prints it as one line and exits with status 2 instead of a traceback,
because the fix is in the user's command, not in the code.
"""


class MetalabError(Exception):
    """An error caused by the user's input; its message alone must say what to change."""


class ConfigError(MetalabError, ValueError):
    """A config value out of its allowed range; the message names the key and the range."""


class DataError(MetalabError, OSError):
    """A data file that is missing or corrupt; the message names every place that was looked at."""


class NumericalError(MetalabError, FloatingPointError):
    """A loss or update became NaN/inf; the message says where (step, inner step, tensor)."""


def require(condition: bool, key: str, allowed: str, got: object) -> None:
    """Raise a :class:`ConfigError` naming ``key``, the ``allowed`` range and the value ``got``."""
    if not condition:
        raise ConfigError(f"{key}={got!r} is not allowed: {key} must be {allowed}")
