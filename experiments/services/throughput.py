"""Throughput of recording outcomes and of assignments, side by side with a minimal insert endpoint (issue 33).

For each backend (SQLite WAL file, temporary PostgreSQL), two servers run at the same time on the server
core(s): ``metalab serve`` and experiments/services/minimal_insert_app.py (FastAPI + SQLAlchemy, one insert
per request, no auth, no running sums: the floor). ``--clients`` client processes on the client core(s)
then run, in turn and ``--rounds`` times alternating, for ``--seconds`` each:
  service writes   POST /v1/workspaces/{w}/experiments/{id}/outcomes   (bearer token, binary outcomes)
  minimal writes   POST /outcomes
  service assigns  POST /v1/workspaces/{w}/experiments/{id}/assignments
  minimal assigns  POST /assignments
Acknowledged requests/s (2xx answers), p50/p99 latency, and the ratio service / minimal per backend. After the
runs the experiment's running sums are checked against its rows (count = acknowledged writes). The record
has the CPU model, the cores, and the load average before and after every phase.
Usage (the lead's timing, both cores quiet): taskset -c 0 python experiments/services/throughput.py \\
    --server-cpu 0 --client-cpu 1 --seconds 20 --rounds 2
Check on one core: python experiments/services/throughput.py --server-cpu 0 --client-cpu 0 --seconds 3 --rounds 1
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _record import HERE, busy_processes, now, write_record
from reliability import TOKEN, WORKSPACE, _free_port

from metalab.services.store.postgres_server import TemporaryPostgres, unavailable_reason

CLIENT_TIMEOUT = 60.0


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",") if c != ""}


class Process:
    """A server subprocess pinned to the server core(s), up when /health answers."""

    def __init__(self, argv: list[str], port: int, cpu: str, log: Path, env: dict[str, str] | None = None):
        pin = ["taskset", "-c", cpu] if shutil.which("taskset") else []
        self.port = port
        self.process = subprocess.Popen(
            [*pin, *argv],
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),
        )
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start; see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _client(args: tuple) -> dict:
    """One client: sequential requests for ``seconds`` on a keep-alive connection; latencies of 2xx answers."""
    url, headers, kind, seconds, cpus, seed = args
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    rng = np.random.default_rng(seed)
    latencies, errors = [], 0
    with httpx.Client(headers=headers, timeout=CLIENT_TIMEOUT) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            body = (
                {"variant": "ab"[int(rng.integers(2))], "value": float(rng.random() < 0.3)} if kind == "write" else None
            )
            clock = time.perf_counter()
            try:
                response = client.post(url, json=body)
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - clock)
            else:
                errors += 1
    return {"latencies": latencies, "errors": errors}


def run_phase(pool: mp.pool.Pool, url: str, headers: dict, kind: str, args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    clock = time.perf_counter()
    jobs = [(url, headers, kind, args.seconds, _cpus(args.client_cpu), i) for i in range(args.clients)]
    results = pool.map(_client, jobs)
    wall = time.perf_counter() - clock
    latencies = np.array([x for r in results for x in r["latencies"]])
    return {
        "acknowledged": int(len(latencies)),
        "errors": int(sum(r["errors"] for r in results)),
        "wall_seconds": round(wall, 2),
        "per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50) * 1e3), 2) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99) * 1e3), 2) if len(latencies) else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def _urls(backend: str, workdir: Path) -> tuple[str, str, TemporaryPostgres | None]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'service.db'}", f"sqlite:///{workdir / 'minimal.db'}", None
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    pg = TemporaryPostgres().start()
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute('CREATE DATABASE "minimal"')
    return pg.url, pg.url.rsplit("/", 1)[0] + "/minimal", pg


def run_backend(backend: str, args: argparse.Namespace, workdir: Path, pool: mp.pool.Pool) -> dict:
    service_url, minimal_url, pg = _urls(backend, workdir)
    servers: list[Process] = []
    try:
        service_port, minimal_port = _free_port(), _free_port()
        servers.append(
            Process(
                [sys.executable, "-m", "metalab", "serve", "--port", str(service_port), "--database-url", service_url],
                service_port,
                args.server_cpu,
                workdir / f"service-{backend}.log",
                {"METALAB_TOKENS": f"{WORKSPACE}:{TOKEN}"},
            )
        )
        servers.append(
            Process(
                [
                    sys.executable,
                    str(HERE / "minimal_insert_app.py"),
                    "--port",
                    str(minimal_port),
                    "--database-url",
                    minimal_url,
                ],
                minimal_port,
                args.server_cpu,
                workdir / f"minimal-{backend}.log",
            )
        )
        service = f"http://127.0.0.1:{service_port}/v1/workspaces/{WORKSPACE}/experiments"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(
            service,
            headers=auth,
            timeout=CLIENT_TIMEOUT,
            json={"name": "throughput", "variants": ["a", "b"], "auto_complete": False},
        )
        created.raise_for_status()
        experiment = f"{service}/{created.json()['id']}"
        minimal = f"http://127.0.0.1:{minimal_port}"
        phases = {
            "service_writes": (experiment + "/outcomes", auth, "write"),
            "minimal_writes": (minimal + "/outcomes", {}, "write"),
            "service_assignments": (experiment + "/assignments", auth, "assign"),
            "minimal_assignments": (minimal + "/assignments", {}, "assign"),
        }
        rounds = []
        for round_index in range(args.rounds):
            result = {name: run_phase(pool, url, headers, kind, args) for name, (url, headers, kind) in phases.items()}
            print(
                backend,
                f"round {round_index}",
                {k: (v["per_second"], v["p99_ms"]) for k, v in result.items()},
                flush=True,
            )
            rounds.append(result)
        state = httpx.get(experiment, headers=auth, timeout=CLIENT_TIMEOUT).json()
        acknowledged = sum(r["service_writes"]["acknowledged"] for r in rounds)
        summary = {}
        for name in phases:
            per_second = [r[name]["per_second"] for r in rounds]
            summary[name] = {
                "per_second_mean": round(float(np.mean(per_second)), 1),
                "p99_ms_max": max((r[name]["p99_ms"] or 0.0) for r in rounds),
            }
        summary["write_ratio_service_over_minimal"] = round(
            summary["service_writes"]["per_second_mean"] / max(summary["minimal_writes"]["per_second_mean"], 1e-9), 3
        )
        summary["assignment_ratio_service_over_minimal"] = round(
            summary["service_assignments"]["per_second_mean"]
            / max(summary["minimal_assignments"]["per_second_mean"], 1e-9),
            3,
        )
        return {
            "database": backend,
            "rounds": rounds,
            "summary": summary,
            "sums_equal_acknowledged_writes": sum(v["count"] for v in state["variants"]) == acknowledged,
            "busy_processes_at_end": busy_processes(),
        }
    finally:
        for server in servers:
            server.stop()
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=2, help="the four phases are repeated, alternating")
    parser.add_argument("--server-cpu", default="0", help="core(s) of both servers and PostgreSQL (taskset -c)")
    parser.add_argument("--client-cpu", default="1", help="core(s) of the client processes")
    parser.add_argument("--name", default="throughput")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its servers
    if hasattr(os, "sched_setaffinity"):  # PostgreSQL, started from here, inherits the server core(s)
        os.sched_setaffinity(0, _cpus(args.server_cpu))
    started, cpu_clock = now(), time.process_time()
    workdir = Path(tempfile.mkdtemp(prefix="metalab-throughput-"))
    backends = {}
    try:
        with mp.get_context("fork").Pool(args.clients) as pool:
            for backend in args.backend or ["sqlite", "postgresql"]:
                backends[backend] = run_backend(backend, args, workdir, pool)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_record(
        args.name,
        {"backends": backends, "settings": vars(args), "parent_cpu_seconds": round(time.process_time() - cpu_clock, 1)},
        started,
        notes="servers (and PostgreSQL) pinned to --server-cpu, clients to --client-cpu; a figure taken with "
        "both on one core, or with other jobs running (see load averages), is a check, not a timing",
    )


if __name__ == "__main__":
    main()
