"""Reliability and load of the services API on a live server (``metalab serve`` under uvicorn), per backend.

For --backend sqlite (a WAL file) and/or postgresql (a temporary server, metalab.services.store.postgres_server):
1. schemathesis (CLI) against the OpenAPI schema: the not_a_server_error check on every operation;
2. load + exactly-once: 8 client threads record 10,000 outcomes with the typed client (Idempotency-Key =
   the unit id); 5% of requests are sent a second time with the same key (a retry after a lost answer);
   then every outcome is listed back: none lost, none duplicated; requests/s and p50/p99 latency;
3. SIGKILL: the same with 8 x 250 outcomes while the server is killed with SIGKILL mid-load and restarted;
   clients retry with the same keys; every acknowledged write must be there once.
Server and clients are pinned to core 1 (--cpu) when taskset exists.
Usage: python experiments/services/reliability.py --backend sqlite --backend postgresql
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from _record import busy_processes, now, write_record

from metalab.services.api import schemas as s
from metalab.services.api.client import ServicesClient
from metalab.services.store.postgres_server import TemporaryPostgres, unavailable_reason

TOKEN = "reliability-token-0123456789"
WORKSPACE = "load"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``metalab serve`` in a subprocess, pinned to one core."""

    def __init__(self, database_url: str, cpu: str | None, log: Path):
        self.url, self.cpu, self.log = database_url, cpu, log
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        pin = ["taskset", "-c", self.cpu] if self.cpu and shutil.which("taskset") else []
        env = {**os.environ, "METALAB_TOKENS": f"{WORKSPACE}:{TOKEN}", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [*pin, sys.executable, "-m", "metalab", "serve", "--port", str(self.port), "--database-url", self.url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        deadline = time.monotonic() + 900  # imports alone took 100 s on a core shared by ~40 processes
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _client(server: Server) -> ServicesClient:
    return ServicesClient(server.base, WORKSPACE, TOKEN, timeout=30, retries=12, backoff=0.1)


def run_schemathesis(server: Server, max_examples: int, workdir: Path) -> dict:
    config = workdir / "schemathesis.toml"
    config.write_text(
        f'headers = {{ Authorization = "Bearer {TOKEN}" }}\n\n[parameters]\n"path.workspace" = "{WORKSPACE}"\n'
    )
    binary = Path(sys.executable).with_name("schemathesis")
    command = [
        str(binary),
        "--config-file",
        str(config),
        "run",
        server.base + "/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(max_examples),
        "--no-color",
    ]
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    tail = done.stdout.strip().splitlines()[-12:]
    print("\n".join(tail), flush=True)
    return {
        "exit_code": done.returncode,
        "passed": done.returncode == 0,
        "max_examples": max_examples,
        "summary_tail": tail,
        "seconds": round(time.perf_counter() - clock, 1),
    }


def load(
    server: Server,
    experiment_id: int,
    clients: int,
    per_client: int,
    retry_share: float,
    kill_after: float | None = None,
    restart: bool = True,
) -> dict:
    """``clients`` threads record ``per_client`` outcomes each; optionally SIGKILL the server mid-load."""
    acknowledged: list[set[str]] = [set() for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def work(index: int) -> None:
        rng = random.Random(index)
        with _client(server) as client:
            for i in range(per_client):
                unit = f"e{experiment_id}-c{index}-{i}"  # keys are per workspace: unique across runs
                clock = time.perf_counter()
                variant, value = "ab"[rng.random() < 0.5], float(rng.random() < 0.3)
                try:
                    client.record_outcome(experiment_id, variant, value, unit=unit, idempotency_key=unit)
                    latencies[index].append(time.perf_counter() - clock)
                    acknowledged[index].add(unit)
                    if rng.random() < retry_share:  # the answer "got lost": the client sends the same request again
                        client.record_outcome(experiment_id, variant, value, unit=unit, idempotency_key=unit)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    errors.append(f"{unit}: {error!r}"[:300])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    clock = time.perf_counter()
    for t in threads:
        t.start()
    killed_at = None
    if kill_after is not None:
        time.sleep(kill_after)
        killed_at = sum(len(a) for a in acknowledged)
        server.kill()
        time.sleep(1.0)
        if restart:
            server.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - clock
    flat = np.array([x for lat in latencies for x in lat])
    return {
        "acknowledged": set().union(*acknowledged),
        "errors": errors,
        "wall_seconds": wall,
        "latency_ms": {
            "p50": float(np.percentile(flat, 50) * 1e3),
            "p99": float(np.percentile(flat, 99) * 1e3),
            "mean": float(flat.mean() * 1e3),
        }
        if len(flat)
        else None,
        "acknowledged_when_killed": killed_at,
    }


def verify(server: Server, experiment_id: int, acknowledged: set[str], expected: int) -> dict:
    with _client(server) as client:
        stored = client.all_outcomes(experiment_id)
        experiment = client.experiment(experiment_id)
    units = Counter(o.unit for o in stored)
    duplicates = sum(c - 1 for c in units.values() if c > 1)
    return {
        "expected": expected,
        "stored": len(stored),
        "duplicates": duplicates,
        "acknowledged_missing": len(acknowledged - set(units)),
        "variant_counts_match_rows": sum(v.count for v in experiment.variants) == len(stored),
    }


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    pg = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'load.db'}"
    else:
        reason = unavailable_reason()
        if reason:
            return {"skipped": reason}
        pg = TemporaryPostgres().start()
        url = pg.url
    server = Server(url, args.cpu, workdir / f"server-{backend}.log")
    result: dict = {"database": backend}
    try:
        server.start()
        with _client(server) as client:

            def experiment(name: str) -> int:
                spec = s.ExperimentCreate(name=name, variants=["a", "b"], auto_complete=False)
                return client.create_experiment(spec).id

            load_id, kill_id = experiment("load"), experiment("kill")
        per_client = args.outcomes // args.clients
        run = load(server, load_id, args.clients, per_client, args.retry_share)
        result["load"] = {
            "clients": args.clients,
            "outcomes": per_client * args.clients,
            "retry_share": args.retry_share,
            "wall_seconds": round(run["wall_seconds"], 2),
            "acknowledged_per_second": round(len(run["acknowledged"]) / run["wall_seconds"], 1),
            "latency_ms_first_attempt": run["latency_ms"],
            "client_errors": run["errors"][:5],
            "client_error_count": len(run["errors"]),
            **verify(server, load_id, run["acknowledged"], per_client * args.clients),
            "busy_processes_during": busy_processes(),
        }
        print(backend, "load", result["load"], flush=True)
        kill_per_client = args.kill_outcomes // args.clients
        run = load(server, kill_id, args.clients, kill_per_client, args.retry_share, kill_after=args.kill_after)
        result["sigkill"] = {
            "clients": args.clients,
            "outcomes": kill_per_client * args.clients,
            "killed_after_seconds": args.kill_after,
            "acknowledged_when_killed": run["acknowledged_when_killed"],
            "client_error_count": len(run["errors"]),
            "client_errors": run["errors"][:5],
            **verify(server, kill_id, run["acknowledged"], kill_per_client * args.clients),
        }
        print(backend, "sigkill", result["sigkill"], flush=True)
        # last: its generated requests complete and create experiments at random
        if args.schemathesis_examples > 0:
            result["schemathesis"] = run_schemathesis(server, args.schemathesis_examples, workdir)
    finally:
        server.stop()
        if pg is not None:
            pg.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--outcomes", type=int, default=10_000)
    parser.add_argument("--kill-outcomes", type=int, default=2_000)
    parser.add_argument("--kill-after", type=float, default=4.0, help="seconds into the kill run")
    parser.add_argument("--retry-share", type=float, default=0.05)
    parser.add_argument("--schemathesis-examples", type=int, default=25)
    parser.add_argument("--cpu", default="1", help="core for server and clients (taskset); '' for none")
    parser.add_argument("--name", default="reliability")
    args = parser.parse_args()
    if args.cpu and shutil.which("taskset"):
        os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    started = now()
    workdir = Path(tempfile.mkdtemp(prefix="metalab-reliability-"))
    backends = {}
    try:
        for backend in args.backend or ["sqlite", "postgresql"]:
            backends[backend] = run_backend(backend, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_record(
        args.name,
        {"backends": backends, "settings": vars(args)},
        started,
        notes="server and clients share the pinned core(s); other helpers' runs were on the machine too "
        "(see busy_processes_*).",
    )


if __name__ == "__main__":
    main()
