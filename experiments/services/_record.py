"""Run records of the services' must-show scripts: command, commit, CPU, date, what else was running, figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from metalab.report.records import without_machine_paths

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECORDS = HERE / "records"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def busy_processes(limit: int = 6) -> list[str]:
    """The processes using the most CPU right now (what else was running beside a timing)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,psr,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [" ".join(line.split()[:6])[:160] for line in out.splitlines()[1:limit + 1]]


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = sys.argv[0]
    return " ".join(["python", script_text, *sys.argv[1:]])


def write_record(name: str, figures: dict[str, Any], started: datetime, notes: str = "") -> Path:
    from metalab.environment import environment_report

    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    record = {
        "name": name,
        "command": command_line(),
        "commit": _git("rev-parse", "HEAD") + ("-dirty" if dirty else ""),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_report(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg(),
        "busy_processes_at_end": busy_processes(),
        "notes": notes,
        "figures": figures,
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{name}.json"
    path.write_text(without_machine_paths(json.dumps(record, indent=2, default=float)) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return path


def now() -> datetime:
    return datetime.now(timezone.utc)
