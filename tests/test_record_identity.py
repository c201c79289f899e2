"""Records of Split MNIST, Permuted MNIST, ZDT and CartPole runs are bit-identical to those committed before issue 36
moved the continual and search learners off Lightning's private API (and the search run onto the plain loop). The
expected records (``tests/fixtures/record_identity/*.json``) were written by this file's ``--write`` mode from the
code before the change (commit 87cff01; the fixture's ``command`` is the command of then: the search problem has
since moved from ``model.`` to ``problem.``). Each run is a tiny version of the experiment, fp32 on one thread;
what is compared is everything in the record a run's arithmetic decides (metrics, steps, why it stopped, the
accuracy matrices, the Pareto front, the logged curves), i.e. all but wall-clock figures. Floating-point results
are only reproducible on the same CPU model and torch version, so on another machine the test skips::

    taskset -c 0 python tests/test_record_identity.py --write   # rewrite the fixtures (when the math changed)
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_run, data_available

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "record_identity"
COMMON = ["trainer.precision=32-true", "cpu_threads=1", "callbacks.progress_bar=null", "seed=0"]
CONTINUAL = [
    "data.train_examples_per_task=100",
    "data.test_examples_per_task=50",
    "learner.batches_per_step=4",
    "trainer.log_every_n_steps=2",
]
CASES: dict[str, list[str]] = {
    "split_mnist_ewc": ["+experiment=split_mnist/ewc", *CONTINUAL],
    "split_mnist_derpp": ["+experiment=split_mnist/derpp_500", *CONTINUAL, "learner.method.buffer_size=50"],
    "permuted_mnist_ewc": ["+experiment=permuted_mnist/ewc", *CONTINUAL, "data.n_tasks=3"],
    "zdt1_nsga2": [
        "+experiment=ga/zdt1",
        "problem.n_variables=6",
        "learner.searcher.population_size=12",
        "trainer.max_steps=6",
    ],
    "cartpole_openai_es": [
        "+experiment=es/cartpole_openai_es",
        "trainer.max_steps=3",
        "learner.searcher.population_size=8",
        "problem.eval_episodes=5",
    ],
}
TIMING = re.compile(r"seconds|per_s\b|_time\b")
# Figures added after the fixtures were written, by issue 31's one solve check (metalab.search.solved): the
# numbers of the check that decides test/solved. They are new keys, not changed values, so they are left out
# of the comparison; test/solved itself is compared.
ADDED_SINCE_FIXTURES = re.compile(r"^test/solve_")


def deterministic_view(run_dir: Path) -> dict[str, Any]:
    """What a run's arithmetic decides, read from its record files (wall-clock figures left out)."""
    record = json.loads((run_dir / "metrics.json").read_text())
    view: dict[str, Any] = {
        "metrics": {
            k: v for k, v in record["metrics"].items() if not TIMING.search(k) and not ADDED_SINCE_FIXTURES.match(k)
        },
        "global_step": record["global_step"],
        "stopped": {k: record["stopped"][k] for k in ("reason", "global_step")},
        "checkpoint_step": record["checkpoint"]["global_step"],
    }
    continual = run_dir / "continual_metrics.json"
    if continual.is_file():
        view["continual_metrics"] = json.loads(continual.read_text())
    front = run_dir / "pareto_front.csv"
    if front.is_file():
        view["pareto_front"] = front.read_text()
    with open(run_dir / "csv" / "metrics.csv") as handle:  # the curves, step by step (not Lightning's epoch column)
        view["curves"] = [
            {
                k: v
                for k, v in row.items()
                if v != "" and k != "epoch" and not TIMING.search(k) and not ADDED_SINCE_FIXTURES.match(k)
            }
            for row in csv.DictReader(handle)
        ]
        view["curves"] = [row for row in view["curves"] if set(row) - {"step"}]
    return view


def machine() -> dict[str, str]:
    from metalab.environment import cpu_info

    return {"cpu": cpu_info()["model"], "torch": torch.__version__}


def run_case(name: str, out: Path) -> dict[str, Any]:
    from metalab.run import train

    train(compose_run(out / name, [*CASES[name], *COMMON]))
    return deterministic_view(out / name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_record_is_bit_identical_to_the_one_before_the_change(name, tmp_path):
    if not data_available("mnist/mnist.npz"):
        pytest.skip("needs mnist/mnist.npz")
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    if expected["machine"] != machine():
        pytest.skip(f"fixture made on {expected['machine']}; floating point differs on {machine()}")
    assert run_case(name, tmp_path) == expected["record"]


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_record_identity.py --write")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for case in sorted(CASES):
            view = run_case(case, Path(folder))
            payload = {
                "command": " ".join(["python train.py", *CASES[case], *COMMON]),
                "machine": machine(),
                "record": view,
            }
            (FIXTURES / f"{case}.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
            print(f"wrote {FIXTURES / case}.json")
