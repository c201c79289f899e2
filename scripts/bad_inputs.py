"""Run every bad input of issue 37 as a user would and write the table of what each gives back.

    python scripts/bad_inputs.py                 # all cases; writes docs/bad_inputs.md
    python scripts/bad_inputs.py --only seed     # the cases whose name contains "seed"; prints, writes nothing

Each command-line case runs ``train.py`` or ``metalab`` in a fresh process (from the repository, or
from an empty folder where the case is about where the command runs) and records its exit status and
the last line of its standard error; a case passes when the status is 2 and stderr holds exactly one
``error:`` line naming the key. The Python-API cases construct the object in this process and record
the ValueError it raises. ``tests/test_bad_inputs.py`` checks the same cases (and imports them from
here), so the table and the tests cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "bad_inputs.md"


@dataclass(frozen=True)
class Case:
    """One bad input: the command (``train`` or ``metalab`` arguments) or a Python-API call, and the text
    its one ``error:`` line (or the ValueError) must contain."""

    name: str
    expected: str
    train: tuple[str, ...] = ()
    metalab: tuple[str, ...] = ()
    api: Callable[[], Any] | None = field(default=None, compare=False)
    api_text: str = ""
    in_empty_folder: bool = False  # run from a folder that is not a metalab repository

    @property
    def command(self) -> str:
        if self.api is not None:
            return self.api_text
        program = "python train.py" if self.train else "metalab"
        words = [program, *(_quoted(w) for w in (self.train or self.metalab))]
        return " ".join(words) + (" (in an empty folder)" if self.in_empty_folder else "")


def _quoted(word: str) -> str:
    return f"'{word}'" if re.search(r"[\s(){}\[\]\"]", word) else word


def _ga(**kwargs: Any) -> Any:
    from metalab.search.ga import GeneticAlgorithm
    from metalab.search.space import SearchSpace

    return GeneticAlgorithm(SearchSpace.box(3, 0.0, 1.0), population_size=8, **kwargs)


PERMUTED = "+experiment=permuted_mnist/ewc"
DISTILL = "+experiment=distill_cifar10/student_narrow_kd"
CASES: list[Case] = [
    Case("seed=-1", "error: seed=-1 is not allowed: seed must be an integer in [0, 4294967295]", train=("seed=-1",)),
    Case(
        "cpu_threads=-2",
        "error: cpu_threads=-2 is not allowed: cpu_threads must be an integer >= 1",
        train=("cpu_threads=-2",),
    ),
    Case(
        "cpu_threads=0",
        "error: cpu_threads=0 is not allowed: cpu_threads must be an integer >= 1",
        train=("cpu_threads=0",),
    ),
    Case(
        "learner.optimizer.lr=-0.1",
        "error: learner.optimizer.lr=-0.1 is not allowed: learner.optimizer.lr must be >= 0",
        train=("learner.optimizer.lr=-0.1",),
    ),
    Case(
        "search problem.hidden=[0]",
        "error: problem.hidden=[0] is not allowed: problem.hidden must be a list of layer widths >= 1",
        train=("+experiment=es/cartpole_openai_es", "problem.hidden=[0]"),
    ),
    Case(
        "search problem.reference=[1.1]",
        "error: problem.reference=[1.1] is not allowed: problem.reference must be 2 finite numbers",
        train=("+experiment=ga/zdt1", "problem.reference=[1.1]"),
    ),
    Case(
        "GA mutation_rate=-0.5",
        "error: learner.searcher.mutation_rate=-0.5 is not allowed: learner.searcher.mutation_rate must be in [0, 1]",
        train=("+experiment=ga/zdt1", "learner.searcher.mutation_rate=-0.5"),
    ),
    Case(
        "GA mutation_rate=5",
        "error: learner.searcher.mutation_rate=5 is not allowed: learner.searcher.mutation_rate must be in [0, 1]",
        train=("+experiment=ga/zdt1", "learner.searcher.mutation_rate=5"),
    ),
    Case(
        "objectives=3 on a 2-objective problem",
        "error: learner.searcher.objectives=3 is not allowed: learner.searcher.objectives must be 2",
        train=("+experiment=ga/zdt1", "learner.searcher.objectives=3"),
    ),
    Case(
        "trainer.max_time=abc",
        "error: trainer.max_time='abc' is not allowed: trainer.max_time must be null, a duration DD:HH:MM:SS",
        train=("trainer.max_time=abc",),
    ),
    Case(
        "unknown diagnosis key",
        "error: diagnosis.divergence.windw is not allowed: unknown key; diagnosis.divergence takes factor, window, "
        "floor, action",
        train=("+diagnosis.divergence.windw=3",),
    ),
    Case(
        "unknown diagnosis section",
        "error: diagnosis.nan_guard is not allowed: unknown diagnosis section; diagnosis takes non_finite, "
        "input_scale,",
        train=("+diagnosis.nan_guard.action=skip",),
    ),
    Case(
        "diagnosis threshold out of range",
        "error: diagnosis.gradient_explosion.factor=0.5 is not allowed: diagnosis.gradient_explosion.factor must "
        "be a number > 1",
        train=("diagnosis.gradient_explosion.factor=0.5",),
    ),
    Case(
        "diagnosis forgetting threshold out of range",
        "error: diagnosis.forgetting.threshold=150 is not allowed: diagnosis.forgetting.threshold must be a number of "
        "accuracy points in (0, 100]",
        train=("diagnosis.forgetting.threshold=150",),
    ),
    Case(
        "misspelt transform _target_",
        "error: data.transform._target_='metalab.data.domain_streams.Rotaton' is "
        "not allowed: module metalab.data.domain_streams has no 'Rotaton'; did you mean "
        "metalab.data.domain_streams.Rotation",
        train=(PERMUTED, "data.transform._target_=metalab.data.domain_streams.Rotaton"),
    ),
    Case(
        "leftover key after changing _target_",
        "error: data.transform.seed is not allowed: metalab.data.domain_streams.Rotation takes no argument 'seed'",
        train=(PERMUTED, "data.transform._target_=metalab.data.domain_streams.Rotation"),
    ),
    Case(
        "unquoted hydra.sweeper.params override",
        "error: hydra.sweeper.params.learner.optimizer.lr="
        "tag(log,interval(0.0001,0.01)) is not allowed: hydra.sweeper.params is one mapping keyed by dotted names",
        train=(
            "-m",
            "hparams_search=protonet_optuna",
            "hydra.sweeper.params.learner.optimizer.lr=tag(log,interval(0.0001,0.01))",
        ),
    ),
    Case(
        "missing teacher checkpoint (distillation)",
        "error: learner.teacher_checkpoint='no/such/teacher.pt' is not allowed: no such file",
        train=(DISTILL, "learner.teacher_checkpoint=no/such/teacher.pt"),
    ),
    Case(
        "mismatched teacher checkpoint (distillation)",
        "error: learner.teacher_checkpoint='tests/fixtures/distill/teacher_nf2.pt' is not allowed: it does not fit "
        "learner.teacher",
        train=(DISTILL, "learner.teacher_checkpoint=tests/fixtures/distill/teacher_nf2.pt"),
    ),
    Case(
        "learner.temperature=0 (distillation)",
        "error: learner.temperature=0 is not allowed: learner.temperature must be > 0",
        train=(DISTILL, "learner.temperature=0"),
    ),
    Case(
        "learner.temperature=-2 (distillation, no teacher)",
        "error: learner.temperature=-2 is not allowed: learner.temperature must be > 0",
        train=("+experiment=distill_cifar10/student_narrow", "learner.temperature=-2"),
    ),
    Case(
        "learner.method.temperature=0 (replay distillation)",
        "error: learner.method.temperature=0 is not allowed: learner.method.temperature must be > 0",
        train=("+experiment=split_cifar10/finetune", "learner/method=distill_replay", "learner.method.temperature=0"),
    ),
    Case("metalab tables nope.md", "error: tables: file 'nope.md' not found", metalab=("tables", "nope.md")),
    Case(
        "metalab select: a family that does not exist",
        "error: family='omniglot_nope' is not allowed: must be one of omniglot_fewshot, split_mnist",
        metalab=("select", "omniglot_nope"),
    ),
    Case(
        "metalab tables outside a repository",
        "is not inside a metalab repository",
        metalab=("tables",),
        in_empty_folder=True,
    ),
    Case(
        "metalab tables --check outside a repository",
        "is not inside a metalab repository",
        metalab=("tables", "--check"),
        in_empty_folder=True,
    ),
    Case(
        "GA crossover_eta=-1 (Python API)",
        "crossover_eta=-1.0 is not allowed: crossover_eta must be a finite number >= 0",
        api=lambda: _ga(crossover_eta=-1.0),
        api_text="GeneticAlgorithm(space, crossover_eta=-1.0)",
    ),
    Case(
        "GA mutation_eta=-1 (Python API)",
        "mutation_eta=-1.0 is not allowed: mutation_eta must be a finite number >= 0",
        api=lambda: _ga(mutation_eta=-1.0),
        api_text="GeneticAlgorithm(space, mutation_eta=-1.0)",
    ),
    Case(
        "GA offspring_size=-4 (Python API)",
        "offspring_size=-4 is not allowed: offspring_size must be >= 1",
        api=lambda: _ga(offspring_size=-4),
        api_text="GeneticAlgorithm(space, offspring_size=-4)",
    ),
    Case(
        "GA offspring_size=0 (Python API)",
        "offspring_size=0 is not allowed: offspring_size must be >= 1",
        api=lambda: _ga(offspring_size=0),
        api_text="GeneticAlgorithm(space, offspring_size=0)",
    ),
    Case(
        "domain adaptation: k above the target's examples per class",
        "error: data.shots=[1, 5, 500] is not allowed: each k of data.shots must be an integer in [0, 100]",
        train=("+experiment=rotated_mnist/finetune_all", "data.shots=[1,5,500]"),
    ),
]


@dataclass
class Outcome:
    code: int | str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_case(case: Case, work_dir: Path) -> Outcome:
    """Run ``case`` (a fresh process for a command) with its runs written under ``work_dir``."""
    if case.api is not None:
        try:
            case.api()
        except ValueError as error:
            return Outcome(f"{type(error).__name__} (Python API)", f"{type(error).__name__}: {error}")
        return Outcome("no error (Python API)", "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    if case.train:
        argv = [
            sys.executable,
            str(ROOT / "train.py"),
            *case.train,
            f"hydra.run.dir={work_dir / 'run'}",
            f"hydra.sweep.dir={work_dir / 'sweep'}",
        ]
    else:
        argv = [sys.executable, "-m", "metalab", *case.metalab]
    cwd = work_dir / "empty" if case.in_empty_folder else ROOT
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    return Outcome(result.returncode, result.stderr)


def passed(case: Case, outcome: Outcome) -> bool:
    if case.api is not None:
        return case.expected in outcome.stderr
    return (
        outcome.code == 2
        and len(outcome.error_lines) == 1
        and case.expected in outcome.error_lines[0]
        and "Traceback" not in outcome.stderr
    )


def _shown(text: str, work_dir: Path) -> str:
    """No machine paths in the committed table: the scratch folder and the repository by name."""
    text = text.replace(str(work_dir / "empty"), "<empty folder>").replace(str(work_dir), "<scratch>")
    return text.replace(str(ROOT), ".").replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the cases whose name contains this text (prints, writes nothing)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or args.only in c.name]
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="metalab-bad-inputs-") as scratch:
        for case in cases:
            work_dir = Path(scratch) / re.sub(r"\W+", "_", case.name)
            outcome = run_case(case, work_dir)
            ok = passed(case, outcome)
            failures += not ok
            rows.append((case, outcome.code, _shown(outcome.last_line, work_dir), "yes" if ok else "NO"))
            print(
                f"{'ok  ' if ok else 'FAIL'} {case.name}: exit {outcome.code}: {_shown(outcome.last_line, work_dir)}",
                flush=True,
            )
    table = ["| case | command | exit | last stderr line | one clear line |", "|---|---|---|---|---|"]
    table += [f"| {case.name} | `{case.command}` | {code} | {line} | {ok} |" for case, code, line, ok in rows]
    if not args.only:
        OUTPUT.write_text(
            "# Bad inputs and what they give back\n\n"
            "Generated by `python scripts/bad_inputs.py` (do not edit): every bad input of issue 37, run in a fresh "
            "process as a user would; a command passes when it exits with status 2 and its standard error holds "
            "exactly one `error:` line naming the key and what is allowed (no traceback). The Python-API cases "
            "raise a ValueError (`metalab.errors.ConfigError`) when the object is constructed. "
            "`tests/test_bad_inputs.py` checks the same cases.\n\n" + "\n".join(table) + "\n"
        )
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    print(f"{len(rows) - failures}/{len(rows)} cases give one clear line")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
