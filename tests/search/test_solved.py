"""ES "solved" is decided once: the console line and test/solved quote the same check of the same episodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_run import config

from metalab.run import train

TINY = ("learner.searcher.population_size=16", "problem.eval_episodes=20", "learner.checkpoint_every=1")
LINE = re.compile(
    r"solved after (\d+) generations \((\d+) evaluations\): mean return ([\d.]+) over (\d+) "
    r"solve-check episodes"
)


def run(tmp_path: Path, capsys, *overrides: str) -> tuple[dict, list[tuple[str, ...]]]:
    train(config(tmp_path, "es/cartpole_openai_es", *TINY, *overrides))
    claims = LINE.findall(capsys.readouterr().out)
    return json.loads((tmp_path / "metrics.json").read_text())["metrics"], claims


def test_the_console_claim_and_test_solved_come_from_one_check(tmp_path, capsys):
    metrics, claims = run(tmp_path, capsys, "problem.solved_at=60", "trainer.max_steps=40")
    assert len(claims) == 1, "the run should solve CartPole at a 60 threshold within 40 generations"
    generation, evaluations, mean, episodes = claims[0]
    assert metrics["test/solved"] == 1.0
    assert f"{metrics['test/solve_return']:.2f}" == mean  # the same number, not another draw
    assert metrics["test/solve_episodes"] == float(episodes) == 20
    assert metrics["test/solve_generation"] == metrics["test/generations_to_solve"] == float(generation)
    assert metrics["test/generations"] == float(generation)  # the run stopped on that check
    assert metrics["test/evaluations"] == float(evaluations)


def test_an_unsolved_run_claims_nothing_and_reports_the_same_check_of_its_final_solution(tmp_path, capsys):
    metrics, claims = run(tmp_path, capsys, "problem.solved_at=1000", "trainer.max_steps=3")
    assert claims == []
    assert metrics["test/solved"] == 0.0 and metrics["test/solve_generation"] == 3.0
    assert "test/generations_to_solve" not in metrics
    assert 0 < metrics["test/solve_return"] <= 500
