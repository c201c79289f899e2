"""Where the store is and which bearer token opens which workspace.

Read in this order, the first that sets a value wins: explicit arguments, the environment
(``METALAB_DATABASE_URL``; ``METALAB_TOKENS`` as ``workspace:token,workspace:token``;
``METALAB_MAX_BODY_BYTES``), a JSON config file (``{"database_url": ..., "tokens": {"workspace": "token"},
"max_body_bytes": ...}``), then the default: a SQLite file ``logs/services/metalab.db`` under
``$METALAB_ROOT`` (the run directory root, ``.`` by default), so a first start needs no server, and a
body limit of 1 MiB (the API's largest legitimate bodies are a few kB of JSON).
"""

from __future__ import annotations

import hmac
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from metalab.errors import ConfigError

WORKSPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_BODY_BYTES_CEILING = 1 << 30


def default_database_url() -> str:
    root = Path(os.environ.get("METALAB_ROOT", "."))
    return f"sqlite:///{(root / 'logs' / 'services' / 'metalab.db').as_posix()}"


def parse_tokens(text: str, source: str) -> dict[str, str]:
    """``"alpha:secret1,beta:secret2"`` -> ``{"alpha": "secret1", "beta": "secret2"}`` (validated)."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        workspace, sep, token = item.partition(":")
        if not sep:
            raise ConfigError(f"{source}: entry {item.split(':')[0]!r}... must be 'workspace:token'")
        if workspace.strip() in tokens:
            raise ConfigError(f"{source}: workspace {workspace.strip()!r} appears twice; give each workspace one token")
        tokens[workspace.strip()] = token.strip()
    return tokens


def _validate_tokens(tokens: dict[str, str], source: str) -> None:
    seen: set[str] = set()
    for workspace, token in tokens.items():
        if not WORKSPACE_PATTERN.match(workspace):
            raise ConfigError(
                f"{source}: workspace {workspace!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{source}: the token of workspace {workspace!r} must have at least {MIN_TOKEN_LENGTH} characters"
            )
        if token in seen:
            raise ConfigError(f"{source}: two workspaces share one token; each workspace needs its own")
        seen.add(token)


@dataclass(frozen=True)
class ServiceSettings:
    """Database URL and the workspace each bearer token belongs to."""

    database_url: str = field(default_factory=default_database_url)
    tokens: dict[str, str] = field(default_factory=dict)  # workspace -> token
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger bodies get 413 before they are read

    def __post_init__(self) -> None:
        _validate_tokens(self.tokens, "tokens")
        _validate_body_limit(self.max_body_bytes, "max_body_bytes")

    def workspace_of(self, token: str) -> str | None:
        """The workspace a token opens, compared in constant time so timing tells nothing."""
        found = None
        for workspace, expected in self.tokens.items():
            if hmac.compare_digest(expected.encode(), token.encode()):
                found = workspace
        return found

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        database_url: str | None = None,
        tokens: dict[str, str] | None = None,
        max_body_bytes: int | None = None,
    ) -> ServiceSettings:
        file_values: dict = {}
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            try:
                file_values = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ConfigError(f"config file {str(path)!r} is not valid JSON: {error}") from None
            if not isinstance(file_values, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a JSON object")
        env_tokens = os.environ.get("METALAB_TOKENS")
        resolved_tokens = (
            tokens
            if tokens is not None
            else parse_tokens(env_tokens, "METALAB_TOKENS")
            if env_tokens
            else file_values.get("tokens", {})
        )
        if not isinstance(resolved_tokens, dict):
            raise ConfigError("tokens must map workspace names to tokens")
        url = (
            database_url
            or os.environ.get("METALAB_DATABASE_URL")
            or file_values.get("database_url")
            or default_database_url()
        )
        if not isinstance(url, str):
            raise ConfigError(f"database_url must be a string (a SQLAlchemy URL), got {type(url).__name__}")
        limit = _body_limit(max_body_bytes, file_values.get("max_body_bytes"))
        return cls(database_url=url, tokens={str(k): str(v) for k, v in resolved_tokens.items()}, max_body_bytes=limit)


def _body_limit(explicit: int | None, from_file: object) -> int:
    if explicit is not None:
        return explicit
    env = os.environ.get("METALAB_MAX_BODY_BYTES")
    if env is not None:
        if not env.strip().isdigit():
            raise ConfigError(
                f"METALAB_MAX_BODY_BYTES={env!r} is not allowed: it must be an integer in 1..{MAX_BODY_BYTES_CEILING}"
            )
        return int(env)
    if from_file is None:
        return DEFAULT_MAX_BODY_BYTES
    if isinstance(from_file, bool) or not isinstance(from_file, int):
        raise ConfigError(
            f"max_body_bytes={from_file!r} in the config file is not allowed: it must be an integer in "
            f"1..{MAX_BODY_BYTES_CEILING}"
        )
    return from_file


def _validate_body_limit(value: object, source: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BODY_BYTES_CEILING:
        raise ConfigError(
            f"{source}={value!r} is not allowed: {source} must be an integer in 1..{MAX_BODY_BYTES_CEILING}"
        )
