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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from metalab.noise import quiet_third_party

    quiet_third_party()  # library-to-library warnings (e.g. Optuna's) off the console of every subcommand
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MetalabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
