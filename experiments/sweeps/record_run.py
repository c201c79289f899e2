"""Run one must-show command and write its record: ``python experiments/sweeps/record_run.py NAME -- CMD...``.

The record (``experiments/sweeps/records/NAME.json``) holds the exact command, the commit, the machine
(:func:`metalab.environment.environment_report`), the date, the command's CPU time (user + system of all
its processes) and wall time, and what else was running (load average, busiest other processes) at the
start and the end, because on a shared 2-core machine a wall time means little without them. Figures
(accuracies, trial counts) are added by ``figures.py`` from the run's own outputs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from metalab.environment import environment_report
from metalab.report.records import without_machine_paths

RECORDS = Path(__file__).resolve().parent / "records"


def machine_load() -> dict:
    """Load average and the five busiest processes (what else was running)."""
    top = subprocess.run(["ps", "-eo", "pcpu,psr,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    lines = [" ".join(line.split()[:6])[:140] for line in top.splitlines()[1:7]]
    return {"loadavg": os.getloadavg(), "busiest": lines}


def commit() -> str:
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True
    ).stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    record = {
        "name": args.name,
        "command": command,
        "commit": commit(),
        "environment": environment_report(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_start": machine_load(),
    }
    log = RECORDS / f"{args.name}.log"
    RECORDS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    record.update(
        exit_status=status,
        wall_seconds=round(time.perf_counter() - start, 1),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 1),
        load_end=machine_load(),
        log=log.name,
    )
    (RECORDS / f"{args.name}.json").write_text(without_machine_paths(json.dumps(record, indent=2)))
    print(json.dumps({k: record[k] for k in ("name", "exit_status", "wall_seconds", "cpu_seconds")}))
    return status


if __name__ == "__main__":
    sys.exit(main())
