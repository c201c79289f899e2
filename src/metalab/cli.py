"""The ``metalab`` command (also ``python -m metalab``): one entry point for the framework's tools.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``; the parser it adds
sets ``func`` (called with the parsed arguments, returning an exit status). Training itself stays in
``train.py`` (Hydra owns its command line). Mistakes in the input end with one ``error:`` line and
exit status 2, as in ``train.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metalab.errors import MetalabError

# Modules that add a subcommand, in the order ``metalab --help`` lists them. Imported lazily so that
# ``metalab env`` does not pay for FastAPI or matplotlib.
SUBCOMMAND_MODULES: list[str] = [
    "metalab.environment",
    "metalab.report.cli",
    "metalab.services.commands",
    "metalab.sweeps.runner",
]
# The commands each module adds: when the command line names one, only its module is imported, so a typo
# in ``metalab serve --bogus`` is reported before Optuna, OmegaConf and the other modules' imports
# (a test holds this table against the parsers the modules really add).
COMMAND_MODULES: dict[str, str] = {
    "env": "metalab.environment",
    "report": "metalab.report.cli",
    "tables": "metalab.report.cli",
    "serve": "metalab.services.commands",
    "jobs": "metalab.services.commands",
    "sweep": "metalab.sweeps.runner",
}


def _named_command(argv: list[str]) -> str | None:
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if first in COMMAND_MODULES else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or only of the one ``argv`` names (then only its module is imported)."""
    parser = argparse.ArgumentParser(prog="metalab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    command = _named_command(argv) if argv is not None else None
    for module in [COMMAND_MODULES[command]] if command else SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)  # argument errors first, before any heavy import
    from metalab.noise import quiet_third_party

    quiet_third_party()  # library-to-library warnings (e.g. Optuna's) off the console of every subcommand
    try:
        return int(args.func(args) or 0)
    except MetalabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
