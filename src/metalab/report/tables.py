"""Markdown tables generated from benchmark records, inside the prose of any results file.

A results file keeps its prose and marks where a generated table goes::

    <!-- metalab:table records=benchmarks/meta/records/maml_vs_learn2learn.jsonl last=1 columns=order,speedup -->
    (the table; rewritten by `metalab tables`)
    <!-- metalab:end -->

Options of the opening marker (``key=value``, no spaces inside a value):

- ``records``: the JSON Lines file (:mod:`metalab.report.records`), relative to the repository root;
- ``where``: keep records whose field equals a value, ``benchmark:maml_vs_learn2learn`` or a setting,
  ``settings.rounds:3``; several conditions separated by ``,``;
- ``last``: only the newest N records that pass ``where``;
- ``columns``: figure keys to show, in order, each optionally renamed, ``speedup:speed-up``; a key
  ``settings.<name>`` shows the record's setting, so a table of runs that differ in one setting names it
  on each row; default every figure key in order of first appearance;
- ``context``: record fields shown before the figures (default ``date,commit,cpu,threads,load``; ``none``;
  ``load`` is the 1/5/15-minute load average when the record was written);
- ``format``: a Python format spec for floats (default ``.4g``).

A study's results (the rows of its ``report.md``, from its committed run records) go in the same way::

    <!-- metalab:study study=experiments/omniglot_fewshot.yaml budget=full -->
    <!-- metalab:end -->

A section whose figures do not fit one table (nested figures, prose around them) is rendered by a function of a
script beside the records, from the newest record of the file::

    <!-- metalab:render records=experiments/services/records/drift.jsonl with=experiments/services/report.py:drift -->
    <!-- metalab:end -->

(``with=<script>:<function>``; the function takes the record and returns Markdown lines.)

``metalab tables`` rewrites every marked block in the repository's Markdown files; ``metalab tables
--check`` exits 1 if any differs from what the records give (a test runs the same check), so a table
typed by hand or left behind by a new record is caught. A study block shows only records made by the
config its runs have now; stale and missing runs are named under the table, so changing an experiment
file changes the table, and ``--check`` fails naming the runs that went stale.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalab.errors import MetalabError
from metalab.report.records import read_records, repo_root

OPEN = re.compile(r"^<!-- metalab:(?P<kind>table|study|render) (?P<options>.*?) -->\n", re.MULTILINE)
MARKERS = ("<!-- metalab:table ", "<!-- metalab:study ", "<!-- metalab:render ")
CLOSE = "<!-- metalab:end -->"
CONTEXT_FIELDS = {
    "date": lambda r: r.get("date", "")[:10],
    "commit": lambda r: r.get("commit") or "",
    "cpu": lambda r: _short_cpu(r.get("cpu", "")),
    "threads": lambda r: r.get("torch_threads", ""),
    "benchmark": lambda r: r.get("benchmark", ""),
    "command": lambda r: f"`{r.get('command', '')}`",
    "load": lambda r: "/".join(f"{x:.1f}" for x in r.get("load_average") or []) or "n/a",
}
SKIPPED_FOLDERS = {".venv", ".git", "logs", "node_modules", "metalab.egg-info"}


@dataclass
class TableSpec:
    """The parsed options of one ``<!-- metalab:table ... -->`` marker."""

    records: str
    where: list[tuple[str, str]] = field(default_factory=list)
    last: int | None = None
    columns: list[tuple[str, str]] | None = None
    context: list[str] = field(default_factory=lambda: ["date", "commit", "cpu", "threads", "load"])
    number_format: str = ".4g"

    @classmethod
    def parse(cls, options: str, where_found: str) -> TableSpec:
        values: dict[str, str] = {}
        for word in options.split():
            key, sep, value = word.partition("=")
            if not sep or key not in {"records", "where", "last", "columns", "context", "format"}:
                raise MetalabError(
                    f"{where_found}: table option {word!r} is not allowed: use records=, where=, "
                    "last=, columns=, context=, format="
                )
            values[key] = value
        if "records" not in values:
            raise MetalabError(f"{where_found}: a metalab:table marker needs records=<file.jsonl>")
        spec = cls(records=values["records"])
        if "where" in values:
            spec.where = [tuple(c.split(":", 1)) for c in values["where"].split(",")]  # type: ignore[misc]
            if any(len(c) != 2 for c in spec.where):
                raise MetalabError(f"{where_found}: where= takes field:value pairs separated by commas")
        if "last" in values:
            spec.last = int(values["last"])
        if "columns" in values:
            spec.columns = [tuple((c.split(":", 1) + [c])[:2]) for c in values["columns"].split(",")]  # type: ignore[misc]
        if "context" in values:
            spec.context = [] if values["context"] == "none" else values["context"].split(",")
            unknown = [c for c in spec.context if c not in CONTEXT_FIELDS]
            if unknown:
                raise MetalabError(
                    f"{where_found}: context field {unknown[0]!r} is not allowed: use " + ", ".join(CONTEXT_FIELDS)
                )
        spec.number_format = values.get("format", spec.number_format)
        return spec


def _short_cpu(model: str) -> str:
    """``AMD EPYC 7B13 64-Core Processor`` -> ``AMD EPYC 7B13``: enough to tell machines apart."""
    return re.sub(r"\s+(\d+-Core )?Processor.*$", "", model).replace("(R)", "").replace("(TM)", "").strip()


def _field(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(record: dict[str, Any], row: dict[str, Any], key: str) -> Any:
    """A figure of the row, or for ``settings.<name>`` the record's setting (the same on all its rows)."""
    return _field(record, key) if key.startswith("settings.") else row.get(key)


def select(records: list[dict[str, Any]], spec: TableSpec) -> list[dict[str, Any]]:
    kept = [r for r in records if all(str(_field(r, k)) == v for k, v in spec.where)]
    return kept[-spec.last :] if spec.last else kept


def format_value(value: Any, number_format: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: ""}[value]
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, number_format)
    return str(value).replace("|", "\\|")


def render_table(records: list[dict[str, Any]], spec: TableSpec) -> str:
    """The Markdown table (header, rule, one line per figure row) of the selected records."""
    chosen = select(records, spec)
    if spec.columns is None:
        keys: list[str] = []
        for record in chosen:
            for row in record["figures"]:
                keys += [k for k in row if k not in keys]
        columns = [(k, k) for k in keys]
    else:
        columns = spec.columns
    header = [*spec.context, *(label for _, label in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in chosen:
        context = [format_value(CONTEXT_FIELDS[c](record)) for c in spec.context]
        for row in record["figures"]:
            cells = [format_value(_cell(record, row, key), spec.number_format) for key, _ in columns]
            lines.append("| " + " | ".join(context + cells) + " |")
    if not chosen:
        lines.append("| " + " | ".join(["(no record yet)"] + [""] * (len(header) - 1)) + " |")
    return "\n".join(lines)


def render_study_block(options: str, root: Path, where_found: str, problems: list[str] | None = None) -> str:
    """The results table of a study's committed run records (``study=<file> budget=<name>``), the
    same rows as its report, with the CPU the runs were made on and a link to the report."""
    from metalab.report import collect, render
    from metalab.report.study import load_study

    values = dict(word.partition("=")[::2] for word in options.split())
    unknown = sorted(set(values) - {"study", "budget"})
    if unknown or "study" not in values:
        raise MetalabError(
            f"{where_found}: a metalab:study marker takes study=<experiments/x.yaml> [budget=<name>]"
            + (f"; {unknown[0]!r} is not allowed" if unknown else "")
        )
    study = load_study(root / values["study"], values.get("budget"))
    collected = collect.collect(study)
    if problems is not None:
        for kind, runs in (("stale", collected.stale), ("missing", collected.missing)):
            if runs:
                problems.append(
                    f"{where_found}: study {study.name} budget {study.budget}, {kind}: "
                    + ", ".join(f"{run.label} seed {run.seed}" for run in runs)
                )
    return render.summary_table(study, collected, root)


def render_section_block(options: str, root: Path, where_found: str) -> str:
    """A section drawn by ``with=<script>:<function>`` from the newest record of ``records=<file.jsonl>``."""
    values = dict(word.partition("=")[::2] for word in options.split())
    if set(values) != {"records", "with"} or ":" not in values["with"]:
        raise MetalabError(
            f"{where_found}: a metalab:render marker takes records=<file.jsonl> "
            "with=<script.py>:<function>, nothing else"
        )
    script, _, function = values["with"].partition(":")
    path = root / values["records"]
    records = read_records(path) if path.exists() else []
    if not records:
        return f"Not run yet (no `{values['records']}`)."
    spec = importlib.util.spec_from_file_location(f"metalab_render_{Path(script).stem}", root / script)
    if spec is None or spec.loader is None or not (root / script).is_file():
        raise MetalabError(f"{where_found}: with={values['with']}: no such script")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    render = getattr(module, function, None)
    if not callable(render):
        raise MetalabError(f"{where_found}: with={values['with']}: {script} has no function {function!r}")
    return "\n".join(render(records[-1])).strip("\n")


def render_markdown(text: str, root: Path, where_found: str = "<text>", problems: list[str] | None = None) -> str:
    """``text`` with every marked block replaced by the table its records give now; the stale and missing
    runs of its study blocks are appended to ``problems``."""
    out, position = [], 0
    for match in OPEN.finditer(text):
        if match.start() < position:
            continue
        end = text.find(CLOSE, match.end())
        if end < 0:
            raise MetalabError(f"{where_found}: a metalab:{match.group('kind')} marker has no closing {CLOSE}")
        if match.group("kind") == "study":
            table = render_study_block(match.group("options"), root, where_found, problems)
        elif match.group("kind") == "render":
            table = render_section_block(match.group("options"), root, where_found)
        else:
            spec = TableSpec.parse(match.group("options"), where_found)
            path = root / spec.records
            table = render_table(read_records(path) if path.exists() else [], spec)  # none yet: says so
        out += [text[position : match.end()], table, "\n"]
        position = end
    out.append(text[position:])
    return "".join(out)


def marked_files(root: Path) -> list[Path]:
    """Markdown files under ``root`` that hold at least one table marker."""
    found = []
    for path in sorted(root.rglob("*.md")):
        if SKIPPED_FOLDERS.intersection(path.relative_to(root).parts):
            continue
        text = path.read_text(errors="replace")
        if any(marker in text for marker in MARKERS):
            found.append(path)
    return found


def refresh(
    paths: list[Path] | None = None,
    root: Path | None = None,
    check: bool = False,
    problems: dict[Path, list[str]] | None = None,
) -> list[Path]:
    """Regenerate the marked tables of ``paths`` (default: every marked file); return the files whose
    text changed (with ``check``, report them and write nothing). ``problems`` receives, per changed
    file, the stale and missing runs of its study blocks (what a reader of ``--check`` needs to act on)."""
    root = root or repo_root()
    changed = []
    for path in paths or marked_files(root):
        old = path.read_text()
        found: list[str] = []
        new = render_markdown(old, root, str(path.relative_to(root) if path.is_relative_to(root) else path), found)
        if new != old:
            changed.append(path)
            if problems is not None:
                problems[path] = found
            if not check:
                path.write_text(new)
    return changed
