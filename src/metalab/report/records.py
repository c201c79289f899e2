"""Benchmark records: what a benchmark measured, where, and with which command, one JSON line per run.

Every benchmark script ends by calling :func:`append_record`, so each figure in a results file can be
traced to a line a command wrote, and tables in the docs are generated from those lines
(:mod:`metalab.report.tables`), never typed::

    from metalab.report.records import append_record

    append_record(
        "benchmarks/meta/records/maml_vs_learn2learn.jsonl",       # relative: to the repository root
        [{"order": "second", "inner_steps": 5, "speedup": 2.16, "l2l_steps_per_s": 0.33}],  # rows
        benchmark="maml_vs_learn2learn",                           # default: the script's file name
        settings={"rounds": 3, "chunk_images": 150},               # what the figures depend on
    )

``figures`` is one row (a flat dict) or a list of rows, values JSON-serialisable (numbers, strings,
booleans, None). The record adds, without being asked: the command (``python <script> <args>``, with
paths relative to the repository), the git commit (and whether the worktree had uncommitted changes),
the CPU model and its instruction-set features, torch's thread count, ``OMP_NUM_THREADS``, the load
average when the record was written (what else was running), the package versions and the UTC date. Records are
appended, never rewritten: a rerun adds a line, and a table
chooses which lines it shows (``last=1``, ``where=...``; see :mod:`metalab.report.tables`).

Files are JSON Lines (``.jsonl``): one record per line, so appends from concurrent runs and diffs stay
clean. Keep them small (figures, not raw timings of every step); they are committed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metalab.errors import MetalabError

Row = dict[str, Any]


def repo_root(start: Path | None = None) -> Path:
    """The repository this code runs from: the nearest folder above ``start`` (default: this file)
    holding ``train.py`` and ``conf/``; the current directory if there is none."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        if (folder / "train.py").is_file() and (folder / "conf").is_dir():
            return folder
    return Path.cwd().resolve()


# What a run writes or regenerates and never reads: changes here do not make the code that ran differ from the
# commit (a study's report, rewritten when its other runs finish, made a run beside them look "dirty").
OUTPUTS_NOT_CODE = (
    ":(exclude,glob)**/*.md",
    ":(exclude,glob)**/*.png",
    ":(exclude,glob)experiments/*/runs/**",
    ":(exclude,glob)benchmarks/**/records/**",
)


def git_commit(root: Path | None = None) -> dict[str, Any]:
    """``{"commit": short hash or None, "dirty": bool}`` of the repository at ``root``; dirty: tracked files
    that differ from the commit, other than reports, figures and records (:data:`OUTPUTS_NOT_CODE`)."""
    root = root or repo_root()
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS_NOT_CODE],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": False}
    return {"commit": commit, "dirty": bool(status.strip())}


def relative_command(argv: list[str] | None = None, root: Path | None = None) -> str:
    """The command line as a user would type it from the repository root: the interpreter as
    ``python`` and absolute paths inside the repository made relative (no machine paths in records)."""
    argv = list(sys.argv if argv is None else argv)
    root = (root or repo_root()).resolve()
    words = ["python"]
    for word in argv:
        words.append(_relative_word(word, root))
    return " ".join(words)


_DIRECTORIES = re.compile(r"(?<![\w.])/(?:[\w.+@-]+/)+(?=[\w.+@-])")


def without_machine_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last component (``/x/y/.venv/bin/python`` -> ``python``):
    records keep what ran (commands, the busiest processes beside a timing), not one machine's folders."""
    return _DIRECTORIES.sub("", text)


def _relative_word(word: str, root: Path) -> str:
    prefix, sep, value = word.partition("=") if "=" in word and not word.startswith("/") else ("", "", word)
    if value.startswith("/"):
        try:
            value = str(Path(value).resolve().relative_to(root))
        except ValueError:
            pass
    return f"{prefix}{sep}{value}"


def machine() -> dict[str, Any]:
    """CPU model, its speed-relevant features, threads and versions (from :mod:`metalab.environment`)."""
    from metalab.environment import environment_report

    report = environment_report()
    return {
        "cpu": report["cpu"]["model"],
        "cpu_features": sorted(k for k, v in report["cpu"]["features"].items() if v),
        "usable_cores": report["usable_cores"],
        "torch_threads": report["torch_threads"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": report["python"],
        # what else was running: timings on a shared machine are only comparable at similar load
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "packages": {k: v for k, v in report["packages"].items() if v},
        "gpu": report["gpu"],
    }


def make_record(
    figures: Row | Iterable[Row],
    *,
    benchmark: str | None = None,
    command: str | None = None,
    settings: Mapping[str, Any] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """The record :func:`append_record` writes (without writing it)."""
    rows = [dict(figures)] if isinstance(figures, Mapping) else [dict(r) for r in figures]
    if not rows:
        raise MetalabError("append_record: no figures given (pass one row or a list of rows)")
    root = repo_root()
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "python"
    record = {
        "benchmark": benchmark or script,
        "command": command or relative_command(root=root),
        **git_commit(root),
        **machine(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": dict(settings or {}),
        "figures": rows,
    }
    if notes:
        record["notes"] = notes
    json.dumps(record, allow_nan=True)  # fail here, not halfway through a line, if a value is not JSON
    return record


def append_record(
    path: str | Path,
    figures: Row | Iterable[Row],
    *,
    benchmark: str | None = None,
    command: str | None = None,
    settings: Mapping[str, Any] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """Append one record of ``figures`` to the JSON Lines file ``path`` and return it.

    ``path`` relative to the repository root (``benchmarks/<area>/records/<name>.jsonl`` by
    convention) or absolute; its folder is created. ``benchmark`` names the measurement (default: the
    script's file name), ``settings`` holds the arguments the figures depend on, ``command`` overrides
    the recorded command line (default: this process's, paths made relative), ``notes`` is free text
    (e.g. what else was running). See the module docstring for the fields added automatically.
    With ``$METALAB_RECORDS_DIR`` set (the test suite sets it), the record goes under that folder
    instead, at the same relative path, so trial runs leave the committed records alone.
    """
    record = make_record(figures, benchmark=benchmark, command=command, settings=settings, notes=notes)
    target = Path(path)
    if os.environ.get("METALAB_RECORDS_DIR"):  # tests and trial runs: keep the committed records clean
        target = Path(os.environ["METALAB_RECORDS_DIR"]) / (
            target.relative_to(repo_root()) if target.is_absolute() and target.is_relative_to(repo_root()) else target
        )
    elif not target.is_absolute():
        target = repo_root() / target
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as out:
        out.write(without_machine_paths(json.dumps(record, sort_keys=True)) + "\n")
    return record


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSON Lines file, oldest first; a line that is not a record is one clear error."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise MetalabError(f"cannot read records file {path}: {error.strerror or error}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise MetalabError(f"{path}:{number} is not a JSON record ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("figures"), list):
            raise MetalabError(f"{path}:{number} is not a benchmark record (no 'figures' list)")
        records.append(record)
    return records
