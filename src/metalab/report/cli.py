"""``metalab report <study>`` and ``metalab tables``: the command-line shells over :mod:`metalab.report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metalab.errors import ConfigError
from metalab.report import tables
from metalab.report.records import repo_root


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="run a study's missing runs and write experiments/<study>/report.md with figures",
        description="Run what a study file lists and has not run yet (resumable), then write its report from the "
        "run records. Example: metalab report experiments/omniglot_fewshot.yaml --jobs 2 --threads 1",
    )
    parser.add_argument("study", help="the study file, experiments/<study>.yaml (or just <study>)")
    parser.add_argument("--budget", help="one of the study's budgets (default: its first; `full`: the papers' budgets)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the study's `threads`, else 1)")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the budget's)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="LABEL",
        help="run only these rows of the study (labels as in the report, e.g. maml_5w1s); the report "
        "still shows every recorded row",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        help="where runs are made (default: $METALAB_STUDY_RUNS, else the repository's logs/studies)",
    )
    parser.add_argument(
        "--no-run", action="store_true", help="run nothing: write the report from the records there are"
    )
    parser.add_argument(
        "--keep-stale",
        action="store_true",
        help="do not run again the runs recorded by a config other than the study's now; show them, "
        "marked stale, in the report",
    )
    parser.add_argument(
        "--adopt",
        type=Path,
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="finished train.py run folders to take as this study's runs of the same experiment, seed and overrides",
    )
    parser.set_defaults(func=run_report)

    table_parser = subparsers.add_parser(
        "tables",
        help="regenerate the tables marked in Markdown files from benchmark records",
        description=tables.__doc__.split("\n\n")[0],
    )
    table_parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: every marked file)")
    table_parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    table_parser.set_defaults(func=run_tables)


def run_tables(args: argparse.Namespace) -> int:
    """Regenerate (or ``--check``) the marked tables of the repository the command runs in, and say how
    many were looked at: silence would not tell "all fresh" from "found nothing to check"."""
    root = _current_repository()
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise ConfigError(
            f"tables: file {missing[0]!r} not found; give Markdown files holding metalab:table or "
            "metalab:study markers, or no file for every marked file of the repository"
        )
    files = [path.resolve() for path in args.files] or tables.marked_files(root)
    problems: dict[Path, list[str]] = {}
    changed = tables.refresh(files, root=root, check=args.check, problems=problems)
    for path in changed:
        verb = "stale" if args.check else "rewritten"
        print(f"{verb}: {_shown(path, root)}", file=sys.stderr if args.check else sys.stdout)
        for problem in problems.get(path, []):  # why a study table changed: runs gone stale or not recorded
            print(f"  {problem}", file=sys.stderr if args.check else sys.stdout)
    count = sum(len(tables.OPEN.findall(path.read_text(errors="replace"))) for path in files)
    where = f"{len(files)} file{'s' * (len(files) != 1)} of {root}"
    if args.check:
        state = f"{len(changed)} file(s) stale" if changed else "all fresh"
    else:
        state = f"{len(changed)} file(s) rewritten" if changed else "all were fresh, nothing rewritten"
    print(f"checked {count} table{'s' * (count != 1)} in {where}: {state}")
    return 1 if args.check and changed else 0


def _current_repository() -> Path:
    """The metalab repository holding the current directory (a folder with ``train.py`` and ``conf/``),
    not the one the package was installed from: the tables a user means are the ones where they stand."""
    here = Path.cwd().resolve()
    root = repo_root(here)
    if not ((root / "train.py").is_file() and (root / "conf").is_dir()):
        raise ConfigError(
            f"tables: {here} is not inside a metalab repository (no folder with train.py and conf/ "
            "at or above it); run metalab tables from the repository whose tables you mean"
        )
    return root


def run_report(args: argparse.Namespace) -> int:
    """Check the study, run what is missing, write the report; exit 2 on bad input or unreadable records,
    1 if a run failed, else 0."""
    from dataclasses import replace

    from metalab.report import collect, render, runner
    from metalab.report import study as studies

    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError(f"--jobs and --threads must be >= 1 (got {args.jobs}, {args.threads})")
    plan = studies.load_study(args.study, args.budget, args.seeds)
    if args.threads:
        plan.runs = [replace(run, threads=args.threads) for run in plan.runs]
    unknown = sorted(set(args.only or []) - set(plan.labels))
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is not allowed: study {plan.name} has rows {', '.join(plan.labels)}")
    studies.check_runs(plan)
    runs_root = (args.runs_dir or runner.default_runs_root(plan.root)).resolve()
    for folder in args.adopt:
        adopted = runner.adopt(plan, folder.resolve(), runs_root)
        runner.copy_records(plan, adopted, runs_root)
        print(f"[{plan.name}] adopted {folder} as {adopted.label} seed {adopted.seed}")
    to_run = replace(plan, runs=[r for r in plan.runs if r.label in args.only]) if args.only else plan
    failed = [] if args.no_run else runner.run_study(to_run, runs_root, jobs=args.jobs, keep_stale=args.keep_stale)
    collected = collect.collect(plan, keep_stale=args.keep_stale)
    command = f"metalab report {_shown(plan.path, plan.root)}" + (
        f" --budget {plan.budget}" if plan.budget != plan.budgets[0] else ""
    )
    path = render.write_report(plan, collected, command)
    print(
        f"[{plan.name}] report: {_shown(path, plan.root)} ({sum(map(len, collected.records.values()))} runs, "
        f"{len(collected.missing)} missing, {len(collected.stale)} stale)"
    )
    if collected.stale:
        print(
            f"[{plan.name}] stale (recorded by a config other than the study's now"
            f"{'; kept and marked' if args.keep_stale else '; left out'}): "
            + ", ".join(f"{run.label} seed {run.seed}" for run in collected.stale)
        )
    healed = [r for records in collected.records.values() for r in records if r.healed]
    if healed:
        print(
            f"[{plan.name}] healed (the self-diagnosis changed their training; marked in the report): "
            + ", ".join(f"{r.run.label} seed {r.run.seed}" for r in healed)
        )
    for message in collected.errors:
        print(f"error: {message}", file=sys.stderr)
    if collected.errors:
        return 2
    for run in failed:
        print(f"failed: {run.label} seed {run.seed} (see its console.log)", file=sys.stderr)
    return 1 if failed else 0


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
