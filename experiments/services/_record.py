"""Run records of the services' must-show scripts, through the project's one record writer.

:func:`write_record` is :func:`metalab.report.records.append_record` (command, commit, CPU and its features,
versions, load average, date) into ``records/<name>.jsonl``, plus what a services timing also needs: when it
started and finished, the cores it was pinned to and the busiest processes at the end (in ``settings``).
``experiments/services/results.md`` is generated from these lines by ``metalab tables``.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metalab.report.records import append_record

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECORDS = HERE / "records"


def busy_processes(limit: int = 6) -> list[str]:
    """The processes using the most CPU right now (what else was running beside a timing)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,psr,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [" ".join(line.split()[:6])[:160] for line in out.splitlines()[1 : limit + 1]]


def write_record(name: str, figures: dict[str, Any], started: datetime, notes: str = "") -> Path:
    """Append the run's record (``figures`` as one row) to ``records/<name>.jsonl``; return that path."""
    path = RECORDS / f"{name}.jsonl"
    settings = {
        "started": started.isoformat(timespec="seconds"),
        "finished": now().isoformat(timespec="seconds"),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "busy_processes_at_end": busy_processes(),
    }
    append_record(path, figures, benchmark=name, settings=settings, notes=notes or None)
    print(f"appended a record to {path.relative_to(REPO)}")
    return path


def now() -> datetime:
    return datetime.now(UTC)
