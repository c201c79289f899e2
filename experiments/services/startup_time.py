"""How long `metalab serve --bogus` takes to report its argument error, before and after issue 38.

Before: the parser of every subcommand was built, importing each module (Optuna, OmegaConf and Hydra through
the sweep runner). After: only the named command's module is imported. Both code paths exist in the tree
(``build_parser()`` without argv is the old one), so they are timed side by side, alternating, in fresh
interpreters pinned to the same core: wall time and the child's CPU time (user + system).

Usage: python experiments/services/startup_time.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from metalab.report.records import append_record

VARIANTS = {
    "before (every subcommand's module)": (
        "from metalab.cli import build_parser; build_parser().parse_args(['serve', '--bogus'])"
    ),
    "after (only the named command's)": "from metalab.cli import main; main(['serve', '--bogus'])",
}


def time_once(code: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``code`` (which exits with status 2)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr, done.stderr
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():
            times[name].append(time_once(code))
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for name, pairs in times.items():
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        rows.append(
            {
                "variant": name,
                "repeats": args.repeats,
                "median_wall_s": statistics.median(walls),
                "min_wall_s": min(walls),
                "median_cpu_s": statistics.median(cpus),
                "min_cpu_s": min(cpus),
                "load_at_end": load,
            }
        )
        print(
            f"{name}: wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}), "
            f"CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f}); load {load}"
        )
    append_record(
        "experiments/services/records/startup_time.jsonl",
        rows,
        settings={"repeats": args.repeats, "affinity": sorted(os.sched_getaffinity(0))},
    )


if __name__ == "__main__":
    main()
