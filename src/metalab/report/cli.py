"""``metalab report <study>`` and ``metalab tables``: the command-line shells over :mod:`metalab.report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metalab.report import tables
from metalab.report.records import repo_root


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    table_parser = subparsers.add_parser(
        "tables", help="regenerate the tables marked in Markdown files from benchmark records",
        description=tables.__doc__.split("\n\n")[0])
    table_parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: every marked file)")
    table_parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    table_parser.set_defaults(func=run_tables)


def run_tables(args: argparse.Namespace) -> int:
    root = repo_root(Path.cwd())
    files = [path.resolve() for path in args.files] or None
    changed = tables.refresh(files, root=root, check=args.check)
    for path in changed:
        verb = "stale" if args.check else "rewritten"
        print(f"{verb}: {path.relative_to(root) if path.is_relative_to(root) else path}",
              file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and changed else 0
