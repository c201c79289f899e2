"""`metalab serve` checks its configuration at start-up: one `error:` line and exit 2 per mistake (issue 38),
argument errors before the heavy imports, and a help screen that says where tokens and the store come from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metalab import cli

SRC = Path(__file__).resolve().parents[2] / "src"
GOOD_TOKENS = "alpha:alpha-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_error(capsys, monkeypatch, *args: str, tokens: str = GOOD_TOKENS) -> str:
    """The one stderr line of a failed ``metalab serve`` (asserting exit 2 and exactly one line)."""
    monkeypatch.setenv("METALAB_TOKENS", tokens)
    monkeypatch.delenv("METALAB_DATABASE_URL", raising=False)
    status = cli.main(["serve", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), (status, lines)
    return lines[0]


def test_unknown_dialect(capsys, monkeypatch):
    line = _serve_error(capsys, monkeypatch, "--database-url", "nosuchdb://user@host/db")
    assert "unknown dialect 'nosuchdb'" in line and "sqlite:///" in line


def test_driver_not_installed(capsys, monkeypatch):
    try:
        import MySQLdb  # noqa: F401

        pytest.skip("MySQLdb is installed here")
    except ImportError:
        pass
    line = _serve_error(capsys, monkeypatch, "--database-url", "mysql+mysqldb://user@host/db")
    assert "driver" in line and "not installed" in line


def test_unreachable_postgres(capsys, monkeypatch):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://user:secret-password@127.0.0.1:{_free_port()}/db"
    line = _serve_error(capsys, monkeypatch, "--database-url", url, "--connect-timeout", "2")
    assert "unreachable" in line and "secret-password" not in line and "***" in line


def test_sqlite_file_that_is_not_a_database(capsys, monkeypatch, tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not a database file " * 100)
    line = _serve_error(capsys, monkeypatch, "--database-url", f"sqlite:///{bogus}")
    assert "unreachable" in line and "not a database" in line


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("alpha", "must be 'workspace:token'"),
        ("alpha:short", "at least 16 characters"),
        ("alpha:alpha-token-0123456789,alpha:other-token-0123456789", "appears twice"),
        ("bad name!:alpha-token-0123456789", "1-64 characters"),
        (",", "no workspace tokens"),
    ],
)
def test_bad_token_list(capsys, monkeypatch, tmp_path, tokens, expected):
    line = _serve_error(capsys, monkeypatch, "--database-url", f"sqlite:///{tmp_path / 's.db'}", tokens=tokens)
    assert expected in line


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_bad_port(capsys, monkeypatch, tmp_path, port):
    line = _serve_error(capsys, monkeypatch, "--database-url", f"sqlite:///{tmp_path / 's.db'}", f"--port={port}")
    assert f"--port={port} is not allowed" in line and "1..65535" in line


def test_port_in_use(capsys, monkeypatch, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _serve_error(capsys, monkeypatch, "--database-url", f"sqlite:///{tmp_path / 's.db'}", f"--port={port}")
    assert "cannot listen there" in line


def test_bad_body_limit(capsys, monkeypatch, tmp_path):
    line = _serve_error(capsys, monkeypatch, "--database-url", f"sqlite:///{tmp_path / 's.db'}", "--max-body-bytes=0")
    assert "max_body_bytes=0" in line


def test_one_line_from_the_real_command():
    env = {**os.environ, "METALAB_TOKENS": GOOD_TOKENS, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "metalab", "serve", "--port", "70000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --port=70000 is not allowed: --port must be in 1..65535"
    ]


def test_argument_errors_come_before_heavy_imports():
    probe = (
        "import sys\nfrom metalab.cli import main\ntry:\n    main(['serve', '--bogus'])\nexcept SystemExit as e:\n"
        "    heavy = sorted(m for m in ('optuna', 'omegaconf', 'sqlalchemy', 'scipy', 'torch', 'fastapi', "
        "'uvicorn', 'numpy') if m in sys.modules)\n    print(e.code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert "unrecognized arguments: --bogus" in done.stderr


def test_command_table_matches_the_parsers():
    import argparse
    import importlib

    for module in cli.SUBCOMMAND_MODULES:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module).add_parser(subparsers)
        assert set(subparsers.choices) == {c for c, m in cli.COMMAND_MODULES.items() if m == module}, module


def test_serve_help_says_where_tokens_and_the_store_come_from(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for needed in (
        "METALAB_TOKENS",
        "METALAB_DATABASE_URL",
        "--config FILE",
        "max_body_bytes",
        "address to listen on",
        "TCP port, 1..65535",
    ):
        assert needed in text, needed
