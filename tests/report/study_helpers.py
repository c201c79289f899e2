"""A tiny study file for the report tests: a ProtoNet small enough to train in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from metalab.data.files import candidate_dirs

TINY = [
    "data.train={way:5,shot:1,query:2}",
    "data.val={way:5,shot:1,query:2}",
    "data.test=[5w1s]",
    "data.test_query=2",
    "data.train_episodes=3",
    "data.val_episodes=4",
    "data.test_episodes=6",
    "data.eval_tasks_per_batch=3",
    "model.hidden=8",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
]


def write_study(folder: Path, experiments: list, overrides: list[str] | None = None, **extra) -> Path:
    path = folder / "experiments" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "seeds": [0, 1],
        "overrides": TINY if overrides is None else overrides,
        "experiments": experiments,
        "budgets": {"tiny": {}, "other": {"seeds": [3]}},
        **extra,
    }
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def omniglot_available() -> bool:
    return any((d / "omniglot/omniglot.npz").is_file() for d in candidate_dirs())
