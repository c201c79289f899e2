"""Running a study (:mod:`metalab.report.study` defines it): one ``train.py`` process per run, ``jobs`` at a time,
an interrupted run resumed from its last checkpoint, a finished run's small record files copied into the study's
folder, and a SIGTERM passed on to the live runs so they save and stop. The only module of :mod:`metalab.report`
that starts processes: the others (``study``, ``collect``, ``render``, ``tables``) read records and render them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from metalab.errors import ConfigError
from metalab.report.console import duration, run_headline
from metalab.report.records import git_commit, machine
from metalab.report.study import AVALANCHE_BASE, RECORD_FILES, Run, Study, check_runs, is_stale

AVALANCHE_SCRIPT = "benchmarks/continual/avalanche_side_by_side.py"


def run_state(study: Study, run: Run, runs_root: Path) -> str:
    """``recorded`` (its records are in the study folder and match the run's config now), ``stale``
    (recorded, by another config), ``done`` (finished in the runs folder, not yet copied), ``interrupted``
    (a checkpoint, and no metrics or the metrics of a run a signal stopped), or ``new`` (nothing, or a
    run folder made by another config, which :func:`execute` sets aside)."""
    records = study.records_dir(run)
    if (records / "metrics.json").is_file():  # the record's identity is its config's fingerprint, not its folder
        return "stale" if is_stale(study, run, records) else "recorded"
    run_dir = runs_root / run.relative_dir(study.name, study.budget)
    if not _matches(run_dir / "run.json", run) or (_has_config(run, run_dir) and is_stale(study, run, run_dir)):
        return "new"
    stopped_by_signal = _stopped_by_signal(run_dir / "metrics.json")
    if (run_dir / "metrics.json").is_file() and not stopped_by_signal:
        return "done"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "interrupted"
    return "new"


def _has_config(run: Run, run_dir: Path) -> bool:
    """A train.py run folder has its config once the run started; an Avalanche one has a fingerprint in run.json
    once it finished."""
    if run.is_avalanche:
        return "fingerprint" in _read_json(run_dir / "run.json")
    return (run_dir / "config_resolved.yaml").is_file()


def set_aside(run_dir: Path) -> Path | None:
    """Move a run folder made by another config out of the way (kept, renamed ``seed<k>.stale-<UTC time>``),
    so the run starts afresh instead of resuming or appending to another computation's curves."""
    if not run_dir.exists():
        return None
    target = run_dir.with_name(f"{run_dir.name}.stale-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}")
    run_dir.rename(target)
    return target


def _stopped_by_signal(metrics_file: Path) -> bool:
    """A run stopped by SIGTERM / Ctrl-C tests what it has and writes metrics.json (the final-checkpoint
    contract), but it did not spend its budget: for a study it is interrupted, to be resumed."""
    try:
        stopped = json.loads(metrics_file.read_text()).get("stopped") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return str(stopped.get("reason", "")).startswith("signal")


def _matches(path: Path, run: Run) -> bool:
    try:
        return json.loads(path.read_text()).get("key") == run.key
    except (OSError, ValueError, AttributeError):
        return False


def command_of(run: Run, run_dir: Path, resume: bool, root: Path) -> list[str]:
    """The ``train.py`` (or Avalanche side-by-side) command of ``run`` writing into ``run_dir``."""
    if run.is_avalanche:
        suite, _, method = run.experiment.removeprefix("avalanche:").partition("/")
        return [
            sys.executable,
            str(root / AVALANCHE_SCRIPT),
            "--suite",
            suite,
            "--seeds",
            str(run.seed),
            "--methods",
            method,
            "--sides",
            "avalanche",
            "--threads",
            str(run.threads),
            "--out",
            str(run_dir),
            *run.overrides,
        ]
    resume_args = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"] if resume else []
    return [
        sys.executable,
        str(root / "train.py"),
        f"+experiment={run.experiment}",
        f"seed={run.seed}",
        f"cpu_threads={run.threads}",
        f"hydra.run.dir={run_dir}",
        "callbacks.progress_bar.refresh_rate=0",
        *run.overrides,
        *resume_args,
    ]


def display_command(run: Run) -> str:
    """The command a user types to repeat this run by hand (no machine paths)."""
    if run.is_avalanche:
        suite, _, method = run.experiment.removeprefix("avalanche:").partition("/")
        return (
            f"python {AVALANCHE_SCRIPT} --suite {suite} --seeds {run.seed} --methods {method} --sides avalanche "
            f"--threads {run.threads} " + " ".join(run.overrides)
        ).strip()
    return " ".join(
        [
            "python train.py",
            f"+experiment={run.experiment}",
            f"seed={run.seed}",
            f"cpu_threads={run.threads}",
            *run.overrides,
        ]
    )


def execute(study: Study, run: Run, runs_root: Path, log: Any = print) -> bool:
    """Run (or resume) one run in its directory; write its ``run.json``; True if it finished."""
    run_dir = runs_root / run.relative_dir(study.name, study.budget)
    resume = run_state(study, run, runs_root) == "interrupted"
    if not resume and run_dir.exists():
        moved = set_aside(run_dir)
        log(
            f"[{study.name}] {run.label} seed {run.seed}: the earlier run folder (another config or unfinished) "
            f"set aside as {_shown(moved, study.root)}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "key": run.key,
        "label": run.label,
        "experiment": run.experiment,
        "seed": run.seed,
        "overrides": list(run.overrides),
        "threads": run.threads,
        "command": display_command(run),
        "study": study.name,
        "budget": study.budget,
        "status": "running",
        "resumed_from_checkpoint": resume,
        "fingerprint": study.fingerprints.get(run) or check_runs(study)[run],
    }
    previous = _read_json(run_dir / "run.json") if resume else {}
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    log(
        f"[{study.name}] {'resuming' if resume else 'starting'} {run.label} seed {run.seed} -> "
        f"{_shown(run_dir, study.root)}"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(run.threads),
        "MKL_NUM_THREADS": str(run.threads),
        "WANDB_RUN_GROUP": f"{study.name}-{study.budget}",  # W&B groups a study's runs and tags them
        "WANDB_TAGS": ",".join([study.name, study.budget, run.label.split(" ")[0]]),
    }
    start = time.time()
    with (run_dir / "console.log").open("a") as console:
        console.write(f"$ {display_command(run)}{' (resumed)' if resume else ''}\n")
        console.flush()
        process = subprocess.Popen(
            command_of(run, run_dir, resume, study.root),
            cwd=study.root,
            env=env,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.add(process)
        try:
            code = process.wait()
        except BaseException:  # the study is being stopped: stop the run, and still record how it ended
            try:
                stop_live_runs()
            finally:  # even if a second Ctrl-C cuts the stopping short
                _record_end(study, run, run_dir, info, previous, process.poll(), time.time() - start, log)
            raise
        finally:
            _LIVE.discard(process)
    return _record_end(study, run, run_dir, info, previous, code, time.time() - start, log)


def _record_end(
    study: Study,
    run: Run,
    run_dir: Path,
    info: dict[str, Any],
    previous: dict[str, Any],
    code: int | None,
    seconds: float,
    log: Any,
) -> bool:
    """Write the final ``run.json`` (status, time, commit, machine) and print the run's finished line; True
    if it finished. Also called when the study is stopped while the run ends, so no record keeps
    ``status: running``. A run a signal stopped wrote metrics.json but did not spend its budget: it is
    not finished (it resumes next time) and its records are not copied."""
    wall = seconds + float(previous.get("wall_seconds", 0.0))
    signalled = _stopped_by_signal(run_dir / "metrics.json")
    finished = (
        code == 0
        and not signalled
        and (_avalanche_result(run_dir, run) is not None if run.is_avalanche else (run_dir / "metrics.json").is_file())
    )
    if run.is_avalanche and finished:
        _write_avalanche_metrics(run_dir, run)
    status = (
        "finished"
        if finished
        else "stopped by a signal (resumes from its checkpoint)"
        if signalled
        else "stopped with the study"
        if code is None
        else f"failed (exit {code})"
    )
    info.update(
        status=status,
        wall_seconds=round(wall, 1),
        resumed_from_checkpoint=bool(info.get("resumed_from_checkpoint"))
        or bool(previous.get("resumed_from_checkpoint")),
        finished_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **git_commit(study.root),
        **_machine_summary(),
    )
    (run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    if finished:
        log(f"[{study.name}] finished {run.label} seed {run.seed}: {run_headline(run_dir)} in {duration(seconds)}")
    elif code is not None and not signalled:
        log(f"[{study.name}] {run.label} seed {run.seed} failed (exit {code}): {_last_error(run_dir / 'console.log')}")
    else:
        log(f"[{study.name}] {run.label} seed {run.seed} stopped after {duration(seconds)}; it resumes next time")
    return finished


def _machine_summary() -> dict[str, Any]:
    facts = machine()
    return {
        "cpu": facts["cpu"],
        "cpu_features": facts["cpu_features"],
        "packages": facts["packages"],
        "python": facts["python"],
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_error(console: Path) -> str:
    lines = [line for line in console.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _avalanche_result(run_dir: Path, run: Run) -> dict[str, Any] | None:
    suite, _, method = run.experiment.removeprefix("avalanche:").partition("/")
    record = _read_json(run_dir / f"{suite}_seed{run.seed}.json")
    return record.get(f"{AVALANCHE_BASE.get(method, method)}/avalanche")


def _write_avalanche_metrics(run_dir: Path, run: Run) -> None:
    """The side-by-side script's result in the shape train.py writes, so one collector reads both."""
    result = _avalanche_result(run_dir, run) or {}
    metrics: dict[str, float] = {}
    for scenario, summary in result.get("summary", {}).items():
        for key in ("acc", "forgetting", "bwt", "fwt"):
            if key in summary:
                metrics[f"test/{scenario}/{key}"] = float(summary[key])
        for i, row in enumerate(summary.get("R", [])):
            for j, value in enumerate(row):
                metrics[f"R/{scenario}/{i}_{j}"] = float(value)
    if result.get("epoch_seconds"):
        metrics["train/seconds_per_epoch"] = sum(result["epoch_seconds"]) / len(result["epoch_seconds"])
    (run_dir / "metrics.json").write_text(
        json.dumps({"metrics": metrics, "targets": {}, "seed": run.seed, "global_step": None}, indent=2, sort_keys=True)
    )


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def sanitize(text: str, runs_root: Path, root: Path) -> str:
    """Machine paths out of a record: the runs folder becomes ``<runs>``, the repository ``.``."""
    for path, name in ((runs_root.resolve(), "<runs>"), (root.resolve(), ".")):
        text = text.replace(str(path), name)
    return text


def copy_records(study: Study, run: Run, runs_root: Path) -> None:
    """The small files of a finished run into the study folder (paths made machine-independent)."""
    source = runs_root / run.relative_dir(study.name, study.budget)
    target = study.records_dir(run)
    target.mkdir(parents=True, exist_ok=True)
    for name in (*RECORD_FILES, "metrics.csv"):  # nothing of an earlier record of this run stays beside the new one
        (target / name).unlink(missing_ok=True)
    for name in RECORD_FILES:
        if (source / name).is_file():
            (target / name).write_text(sanitize((source / name).read_text(), runs_root, study.root))
    curves = source / "csv" / "metrics.csv"
    if curves.is_file():
        (target / "metrics.csv").write_text(curves.read_text())


def adopt(study: Study, run_dir: Path, runs_root: Path) -> Run:
    """Take a finished run made outside the study (e.g. ``python train.py +experiment=...``) as the
    study run with the same experiment, seed and overrides (thread settings aside)."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not (run_dir / "metrics.json").is_file() or not overrides_file.is_file():
        raise ConfigError(
            f"--adopt {run_dir}: not a finished train.py run (needs metrics.json and .hydra/overrides.yaml)"
        )
    given = [str(o) for o in yaml.safe_load(overrides_file.read_text())]
    ignored = ("cpu_threads=", "hydra.", "callbacks.progress_bar", "seed=")
    experiment = next((o.split("=", 1)[1] for o in given if o.startswith("+experiment=")), None)
    record = json.loads((run_dir / "metrics.json").read_text())
    seed = record.get("seed", 0)
    rest = sorted(o for o in given if not o.startswith(("+experiment=", *ignored)))
    used_precision = (record.get("precision") or {}).get("used")
    if used_precision and not any(o.startswith("trainer.precision=") for o in rest):
        # a run left on `auto` computed in the precision it resolved to: the same run as one that forced it
        rest = sorted([*rest, f"trainer.precision={used_precision}"])
    for run in study.runs:
        if run.experiment == experiment and run.seed == seed and sorted(run.overrides) == rest:
            target = runs_root / run.relative_dir(study.name, study.budget)
            target.mkdir(parents=True, exist_ok=True)
            source_root = next((p.parent for p in run_dir.parents if p.name == "logs"), run_dir)
            for name in RECORD_FILES:
                if (run_dir / name).is_file():  # its paths as if it had run in the study's folder
                    text = (run_dir / name).read_text().replace(str(run_dir), str(target))
                    (target / name).write_text(text.replace(str(source_root), str(study.root)))
            if (run_dir / "csv" / "metrics.csv").is_file():
                (target / "csv").mkdir(exist_ok=True)
                shutil.copy(run_dir / "csv" / "metrics.csv", target / "csv" / "metrics.csv")
            metrics = _read_json(run_dir / "metrics.json").get("metrics", {})
            info = {
                "key": run.key,
                "label": run.label,
                "experiment": run.experiment,
                "seed": run.seed,
                "overrides": list(run.overrides),
                "threads": _threads_of(given, run.threads),
                "command": "python train.py " + " ".join(given),
                "study": study.name,
                "budget": study.budget,
                "status": "finished",
                "adopted": True,
                "wall_seconds": metrics.get("train/wall_seconds"),
                "finished_at": dt.datetime.fromtimestamp((run_dir / "metrics.json").stat().st_mtime, dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                **_machine_summary(),
                **git_commit(source_root),
            }  # the commit of the checkout it ran in, now
            (target / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            return run
    raise ConfigError(
        f"--adopt {run_dir}: no run of study {study.name} (budget {study.budget}) has experiment "
        f"{experiment!r}, seed {seed} and overrides {rest}"
    )


def _threads_of(overrides: list[str], default: int) -> int:
    for override in overrides:
        if override.startswith("cpu_threads="):
            return int(override.split("=", 1)[1])
    return default


def run_study(study: Study, runs_root: Path, jobs: int = 1, log: Any = print, keep_stale: bool = False) -> list[Run]:
    """Run every run not yet recorded or recorded by another config (``jobs`` at a time; ``keep_stale``:
    leave stale records as they are), copy the records of finished ones; return the runs that failed."""
    pending, stale = [], []
    for run in study.runs:
        state = run_state(study, run, runs_root)
        if state == "recorded":
            continue
        if state == "stale":
            stale.append(run)
            if keep_stale:
                continue
        if state == "done":
            copy_records(study, run, runs_root)
            continue
        pending.append(run)
    skipped = len(study.runs) - len(pending)
    log(
        f"[{study.name}] budget {study.budget}: {len(study.runs)} runs, {skipped} already done, {len(pending)} to run"
        f"{f' ({jobs} at a time)' if pending and jobs > 1 else ''}"
    )
    if stale:
        verb = "kept as they are, marked stale in the report" if keep_stale else "to run again"
        log(
            f"[{study.name}] stale (recorded by a config other than the study's now), {verb}: "
            + ", ".join(f"{run.label} seed {run.seed}" for run in stale)
        )
    failed: list[Run] = []

    def one(run: Run) -> None:
        if execute(study, run, runs_root, log):
            copy_records(study, run, runs_root)
        else:
            failed.append(run)

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if _in_main_thread() else None
    start = time.time()
    try:
        if jobs <= 1:
            for run in pending:
                one(run)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(one, run) for run in pending]
                try:
                    for future in futures:
                        future.result()
                except BaseException:  # stop here, inside the pool: leaving it waits for every queued run
                    for future in futures:
                        future.cancel()
                    stop_live_runs()
                    raise
    except BaseException:  # Ctrl-C or a kill of the study: stop its runs too; their checkpoints stay for resuming
        stop_live_runs()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if pending:
        log(
            f"[{study.name}] budget {study.budget}: {len(pending) - len(failed)} run(s) finished now, {len(failed)} "
            f"failed, {skipped} done before; {duration(time.time() - start)} in all"
        )
    return failed


_LIVE: set[subprocess.Popen] = set()  # the runs in progress, stopped with the study


def stop_live_runs() -> None:
    for process in list(_LIVE):
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def default_runs_root(root: Path) -> Path:
    """``$METALAB_STUDY_RUNS`` if set, else the repository's ``logs/studies`` (git-ignored)."""
    configured = os.environ.get("METALAB_STUDY_RUNS")
    return Path(configured) if configured else root / "logs" / "studies"


__all__ = [
    "run_state",
    "command_of",
    "display_command",
    "execute",
    "copy_records",
    "adopt",
    "run_study",
    "stop_live_runs",
    "default_runs_root",
]
