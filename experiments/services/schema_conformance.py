"""Schemathesis with every check (``--checks all``, stateful phase included) against a live server, per backend.

For --backend sqlite (a WAL file) and/or postgresql (a temporary server, metalab.services.store.postgres_server):
``metalab serve`` starts in a temporary directory (experiments/services/reliability.py's Server), then

    schemathesis --config-file <dir>/schemathesis.toml run <base>/openapi.json --checks all \\
        --phases examples,coverage,fuzzing,stateful --max-examples N --seed S --report json

runs in that directory. The configuration gives the workspace's token and path parameter, and states the one
thing the schema cannot: on the operations whose bodies have a cross-field rule (``low <= high`` of a knob,
``lower < upper`` of an insight, a float or int gene's ``low < high``), a schema-valid body may get the
documented 422 (``positive_data_acceptance`` expects 2xx/401/403/404/409 elsewhere, schemathesis's default).
The record has the number of operations, test cases and failures (from schemathesis's JSON report) and the
summary's last lines. Usage:
    taskset -c 0 python experiments/services/schema_conformance.py --backend sqlite --backend postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _record import busy_processes, now, write_record
from reliability import TOKEN, WORKSPACE, Server

from metalab.services.store.postgres_server import TemporaryPostgres, unavailable_reason

POSITIVE_DEFAULT = ["2xx", "401", "403", "404", "409"]


def cross_field_operations(openapi: dict) -> list[str]:
    """The operation ids the schema marks ``x-cross-field-rule`` (a body rule JSON Schema cannot state)."""
    return sorted(
        op["operationId"]
        for path in openapi.get("paths", {}).values()
        for op in path.values()
        if isinstance(op, dict) and "x-cross-field-rule" in op
    )


def config_text(cross_field: list[str]) -> str:
    """schemathesis.toml: auth, the workspace, and a 422 accepted on the cross-field-rule operations only."""
    lines = [
        f'headers = {{ Authorization = "Bearer {TOKEN}" }}',
        "",
        "[parameters]",
        f'"path.workspace" = "{WORKSPACE}"',
        "",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {json.dumps(POSITIVE_DEFAULT)}",
    ]
    for operation_id in cross_field:
        lines += [
            "",
            "[[operations]]",
            f'include-operation-id = "{operation_id}"',
            "checks.positive_data_acceptance.expected-statuses = " + json.dumps([*POSITIVE_DEFAULT, "422"]),
        ]
    return "\n".join(lines) + "\n"


def _short(operation: str) -> str:
    """``POST /v1/workspaces/{workspace}/teams`` as ``POST .../teams`` (the record writer would take the long
    form for a machine path)."""
    return operation.replace("/v1/workspaces/{workspace}", "...")


def failures_of(report: dict) -> dict:
    """Operations, phases, test cases, failure groups and errors from schemathesis's JSON run report."""
    failures = report.get("failures", [])
    return {
        "schemathesis_version": report.get("schemathesis_version"),
        "operations": report.get("operations", {}),
        "phases": {name: p.get("status") for name, p in report.get("phases", {}).items()},
        "test_cases": report.get("test_cases", {}),
        "failure_count": sum(f.get("count", 0) for f in failures),
        "failed_operations": sorted({_short(op) for f in failures for op in f.get("operations", [])}),
        "failures": [
            {"title": f.get("title"), "count": f.get("count"), "operations": list(map(_short, f.get("operations", [])))}
            for f in failures
        ][:40],
        "errors": report.get("errors", []),
        "warnings": report.get("warnings", []),
    }


def run_schemathesis(base: str, max_examples: int, seed: int, workdir: Path, paths: str | None = None) -> dict:
    config = workdir / "schemathesis.toml"
    cross_field = cross_field_operations(httpx.get(base + "/openapi.json", timeout=60).json())
    config.write_text(config_text(cross_field))
    report = workdir / "schemathesis.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        base + "/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *(["--include-path-regex", paths] if paths else []),
    ]
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    out = done.stdout.strip().splitlines()
    print("\n".join(out if paths else out[-60:]), flush=True)  # a diagnosis of a few operations: all of it
    parsed = json.loads(report.read_text()) if report.exists() else {}
    return {
        "exit_code": done.returncode,
        "passed": done.returncode == 0,
        "max_examples": max_examples,
        "seed": seed,
        "cross_field_operations": cross_field,
        "summary_tail": out[-8:],
        "failure_lines": [line for line in out if line.startswith("_") and " " in line][:60],
        "report": failures_of(parsed),
        "seconds": round(time.perf_counter() - clock, 1),
    }


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    pg = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'conformance.db'}"
    else:
        reason = unavailable_reason()
        if reason:
            return {"skipped": reason}
        pg = TemporaryPostgres().start()
        url = pg.url
    server = Server(url, args.cpu, workdir / f"server-{backend}.log")
    try:
        server.start()
        result = run_schemathesis(server.base, args.max_examples, args.seed, workdir, args.paths)
        result["busy_processes_during"] = busy_processes()
        return result
    finally:
        server.stop()
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", default="0", help="core for the server (taskset); '' for none")
    parser.add_argument("--name", default="schema_conformance")
    parser.add_argument(
        "--paths", default=None, help="only the operations whose path matches this regex (a diagnosis, not a result)"
    )
    parser.add_argument("--no-record", action="store_true", help="print only; write no record (a diagnosis run)")
    args = parser.parse_args()
    started = now()
    backends = {}
    for backend in args.backend or ["sqlite", "postgresql"]:
        workdir = Path(tempfile.mkdtemp(prefix=f"metalab-schemathesis-{backend}-"))
        try:
            backends[backend] = run_backend(backend, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(backend, {k: v for k, v in backends[backend].items() if k != "failure_lines"}, flush=True)
    if not args.no_record:
        write_record(args.name, {"backends": backends, "settings": vars(args)}, started)
    sys.exit(0 if all(b.get("passed", True) for b in backends.values()) else 1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
