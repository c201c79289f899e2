"""Searches run through train.py's path like every run (on the plain loop): records, curves, Pareto plot, exact
resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import metalab.learners.search as search_run
from metalab.run import train
from metalab.search.loop import run_generation

CONF = Path(__file__).resolve().parents[2] / "conf"


def config(tmp_path: Path, experiment: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"+experiment={experiment}",
                f"paths.output_dir={tmp_path}",
                f"paths.log_dir={tmp_path}/logs",
                "callbacks.progress_bar=null",
                "callbacks.lr_monitor=null",
                *overrides,
            ],
        )


TINY_ZDT = (
    "problem.n_variables=6",
    "learner.searcher.population_size=12",
    "learner.checkpoint_every=2",
    "trainer.max_steps=6",
)


def curves(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/best_fitness_0")]


def crash_at(generation_index: int):
    """``run_generation`` that dies (a simulated kill) when asked for generation ``generation_index``."""

    def generation(searcher, problem, seed, generation):
        if generation == generation_index:
            raise RuntimeError("simulated kill")
        return run_generation(searcher, problem, seed, generation)

    return generation


def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(config(straight, "ga/zdt1", *TINY_ZDT))
    killed = tmp_path / "killed"
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="simulated kill"):
        patch.setattr(
            search_run, "run_generation", crash_at(5)
        )  # dies after 5 generations; the last checkpoint is at 4
        train(config(killed, "ga/zdt1", *TINY_ZDT))
    resumed = tmp_path / "resumed"
    train(config(resumed, "ga/zdt1", *TINY_ZDT, f"ckpt_path={killed}/checkpoints/last.ckpt"))
    assert (resumed / "pareto_front.csv").read_text() == (straight / "pareto_front.csv").read_text()
    done, again = (
        json.loads((straight / "metrics.json").read_text()),
        json.loads((resumed / "metrics.json").read_text()),
    )
    assert again["metrics"]["test/hypervolume"] == done["metrics"]["test/hypervolume"]
    assert curves(resumed) == curves(straight)[4:]  # generations 5 and 6, the same numbers
    assert (straight / "pareto_front.png").stat().st_size > 0


def test_policy_search_run_writes_its_record(tmp_path):
    train(
        config(
            tmp_path,
            "es/cartpole_openai_es",
            "trainer.max_steps=2",
            "learner.searcher.population_size=8",
            "problem.eval_episodes=5",
            "learner.checkpoint_every=1",
        )
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["metrics"]["test/episodes"] == 5 and record["metrics"]["test/generations"] == 2
    assert len(curves_single(tmp_path)) == 2
    assert (tmp_path / "config_resolved.yaml").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def curves_single(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/best_fitness")]
