"""Run every method of a suite for several seeds, one ``train.py`` process after another, niced, 1 thread.

    python experiments/continual/run_suite.py --suite split_mnist --seeds 0 1 2
    python experiments/continual/run_suite.py --suite split_cifar10 --seeds 0 1 2 --methods finetune er_500

Each run is exactly ``python train.py +experiment=<suite>/<method> seed=<k> cpu_threads=1`` with its run
directory fixed to ``<root>/<suite>/<method>/seed<k>`` (``metrics.json``, ``continual_metrics.json``,
heatmaps, ``config_resolved.yaml``) and its console output in ``<root>/<suite>/<method>/seed<k>.log``.
Runs whose ``metrics.json`` exists are skipped, so the script can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METHODS = ["finetune", "joint", "ewc", "online_ewc", "er_200", "er_500", "derpp_500", "lwf", "progressive"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, choices=["split_mnist", "split_cifar10"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--root", type=Path, default=Path("/work/runs/continual"))
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    for seed in args.seeds:  # seed-major: a partial sweep still covers every method
        for method in args.methods:
            run_dir = args.root / args.suite / method / f"seed{seed}"
            if (run_dir / "metrics.json").is_file():
                continue
            command = ["nice", "-n", str(args.nice), sys.executable, "train.py", f"+experiment={args.suite}/{method}",
                       f"seed={seed}", "cpu_threads=1", f"hydra.run.dir={run_dir}",
                       "callbacks.progress_bar.refresh_rate=1000", *args.overrides]
            log = run_dir.parent / f"seed{seed}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            start = time.time()
            with log.open("w") as out:
                out.write(" ".join(command) + "\n")
                out.flush()
                code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"{args.suite}/{method} seed {seed}: exit {code} in {time.time() - start:.0f}s -> {run_dir}",
                  flush=True)


if __name__ == "__main__":
    main()
