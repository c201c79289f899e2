"""``metalab select``: successive halving over a family's candidates, on a synthetic objective.

The scheduler and the pruner are the real ones (an Optuna study, enqueued trials, ``should_prune``); only the
training is replaced by arms whose learning curves are known, so the arm that must win is known too.
"""

import math
from pathlib import Path

import optuna
import pytest

from metalab.errors import ConfigError
from metalab.sweeps.families import Budget, Candidate, load_family
from metalab.sweeps.halving import SynchronousHalvingPruner, rung_steps, survivors
from metalab.sweeps.select import hindsight, make_pruner, select

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


class SyntheticArms:
    """Arm ``i`` reaches ``ceiling[i] - gap[i] / resource``: its final value is its ceiling, but an arm with a
    large gap starts low. Counts the resource each arm was trained for (resumed: only the new part)."""

    def __init__(self, ceiling: dict[str, float], gap: dict[str, float]) -> None:
        self.ceiling, self.gap, self.spent = ceiling, gap, {name: 0 for name in ceiling}

    def advance(self, candidate: Candidate, start: int, stop: int) -> dict[int, float]:
        self.spent[candidate.name] += stop - start
        name = candidate.name
        return {r: self.ceiling[name] - self.gap[name] / r for r in range(start + 1, stop + 1)}

    def test(self, candidate: Candidate) -> dict[str, float]:
        return {"test/acc": self.ceiling[candidate.name]}


@pytest.fixture(scope="module")
def family():
    return load_family("split_mnist", CONF)  # only its space, names and direction are used here


def arms(family, ceilings: list[float], gaps: list[float] | None = None) -> SyntheticArms:
    names = [c.name for c in family.candidates()]
    gaps = gaps or [1.0] * len(names)
    return SyntheticArms(dict(zip(names, ceilings, strict=True)), dict(zip(names, gaps, strict=True)))


def brute_force_survivors(values: list[float], eta: int) -> list[int]:
    """Independent reference: sort indices by value, keep the first max(1, n // eta) and every tie of the last."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    keep = max(1, len(values) // eta)
    cut = values[order[keep - 1]]
    return sorted(i for i in range(len(values)) if values[i] >= cut)


@pytest.mark.parametrize("seed", range(20))
def test_survivors_match_a_brute_force_reference(seed):
    import random

    rng = random.Random(seed)
    values = [round(rng.random(), 1) for _ in range(rng.randint(1, 12))]  # rounded: ties happen
    for eta in (2, 3, 4):
        assert survivors(values, eta) == brute_force_survivors(values, eta)
        assert survivors([-v for v in values], eta, maximize=False) == brute_force_survivors(values, eta)


def test_survivors_drop_nan():
    assert survivors([0.5, math.nan, 0.9, 0.1], 2) == [2, 0] or survivors([0.5, math.nan, 0.9, 0.1], 2) == [0, 2]
    assert survivors([math.nan, math.nan], 2) == []


def test_rung_steps():
    assert rung_steps(1, 3, 27) == [1, 3, 9, 27]
    assert rung_steps(2, 2, 10) == [2, 4, 8, 10]
    with pytest.raises(ConfigError, match="reduction_factor=1 is not allowed"):
        rung_steps(1, 1, 9)


def test_halving_keeps_the_best_arm_and_eliminates_the_worst(family):
    # 7 arms; the best (0.9) is listed in the middle and starts lowest of the good ones
    ceilings = [0.2, 0.5, 0.3, 0.9, 0.6, 0.1, 0.4]
    gaps = [0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1]
    runner = arms(family, ceilings, gaps)
    budget = Budget("t", max_resource=9, min_resource=1, reduction_factor=3)
    outcome = select(family, budget, family.candidates(), runner, SynchronousHalvingPruner(1, 3))
    names = [c.name for c in family.candidates()]
    assert outcome.choice == names[3]
    first = outcome.rungs[0]
    assert first.resource == 1 and sorted(first.kept) == sorted([names[3], names[4]])  # top 7 // 3 = 2 at r=1
    assert names[5] in first.eliminated and names[0] in first.eliminated  # the two worst never go on
    # resources: 7 arms x 1, 2 arms to 3 (2 more each), then the one left straight to 9 (6 more)
    assert sum(runner.spent.values()) == 7 + 2 * 2 + 6
    assert runner.spent[names[3]] == 9 and runner.spent[names[5]] == 1


def test_halving_costs_at_most_a_third_of_training_every_arm_fully(family):
    runner = arms(family, [0.1 * i for i in range(7)])
    budget = Budget("t", max_resource=27, min_resource=1, reduction_factor=3)
    select(family, budget, family.candidates(), runner, SynchronousHalvingPruner(1, 3))
    full = arms(family, [0.1 * i for i in range(7)])
    hindsight(family, budget, family.candidates(), full, seed=0)
    assert sum(full.spent.values()) == 7 * 27
    assert sum(runner.spent.values()) <= sum(full.spent.values()) / 3


def test_trials_carry_the_candidates_params_and_the_pruned_state(family):
    """The study holds one trial per candidate with its categorical params (enqueued), and PRUNED/COMPLETE."""
    seen = {}

    class Spy(SyntheticArms):
        def advance(self, candidate, start, stop):
            seen[candidate.name] = candidate.params
            return super().advance(candidate, start, stop)

    runner = Spy(arms(family, [0.1 * i for i in range(7)]).ceiling, {n: 0.0 for n in arms(family, [0] * 7).ceiling})
    budget = Budget("t", max_resource=3, min_resource=1, reduction_factor=3)
    outcome = select(family, budget, family.candidates(), runner, SynchronousHalvingPruner(1, 3))
    assert seen == {c.name: c.params for c in family.candidates()}
    assert outcome.rungs[0].kept == [family.candidates()[-1].name, family.candidates()[-2].name] or set(
        outcome.rungs[0].kept
    ) == {family.candidates()[-1].name, family.candidates()[-2].name}


def test_optunas_asynchronous_pruner_runs_in_the_same_scheduler(family):
    """Optuna's SuccessiveHalvingPruner judges each arm against those judged before it: in lock-step it still
    finds the best arm here, but the first arm listed always goes on (the cost synchronous halving avoids)."""
    runner = arms(family, [0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6])
    budget = Budget("t", max_resource=9, min_resource=1, reduction_factor=3)
    outcome = select(family, budget, family.candidates(), runner, make_pruner(CONF, "successive_halving", budget))
    names = [c.name for c in family.candidates()]
    assert outcome.choice == names[3]
    assert names[0] in outcome.rungs[0].kept
    assert len(outcome.rungs[0].kept) > 2


def test_a_nan_arm_is_eliminated_not_chosen(family):
    runner = arms(family, [0.1, 0.2, math.nan, 0.3, 0.4, 0.5, 0.6])
    budget = Budget("t", max_resource=3, min_resource=1, reduction_factor=3)
    outcome = select(family, budget, family.candidates(), runner, SynchronousHalvingPruner(1, 3))
    assert family.candidates()[2].name in outcome.rungs[0].eliminated
    assert outcome.choice == family.candidates()[-1].name


def test_pruner_is_rung_step():
    pruner = SynchronousHalvingPruner(2, 3)
    assert [s for s in range(1, 60) if pruner.is_rung_step(s)] == [2, 6, 18, 54]
    assert isinstance(pruner, optuna.pruners.BasePruner)


def test_every_family_candidate_composes():
    from metalab.sweeps.runner import compose
    from metalab.sweeps.select import LightningStages

    for name in ("omniglot_fewshot", "split_mnist"):
        fam = load_family(name, CONF)
        budget = fam.budget("full")
        stages = LightningStages(fam, budget, 0, Path("unused"), CONF)
        for candidate in fam.candidates():
            cfg = compose(CONF, stages.overrides(candidate, budget.max_resource))
            assert cfg.optimized_metric == fam.objective
            if fam.fidelity.resume:
                assert cfg.trainer.max_epochs == budget.max_resource and cfg.trainer.max_time is None
                assert cfg.learner.get("scheduler") is None or "StepLR" in cfg.learner.scheduler._target_
            else:
                assert cfg.data.train_examples_per_task == budget.max_resource * fam.fidelity.unit


def test_unknown_family_is_one_error_line(capsys, monkeypatch):
    from metalab.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["select", "omniglot_nope"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: family='omniglot_nope' is not allowed: must be one of omniglot_fewshot, split_mnist "
        "(the files in conf/select/)"
    ]


def test_a_family_with_a_continuous_entry_is_refused(tmp_path):
    (tmp_path / "select").mkdir()
    (tmp_path / "select" / "bad.yaml").write_text(
        "objective: val/acc\ntest_metric: test/acc\ndefault: {learner.optimizer.lr: 0.1}\n"
        "fidelity: {key: trainer.max_epochs}\n"
        "budgets: {full: {max_resource: 9, min_resource: 1, reduction_factor: 3}}\n"
        "params:\n  learner.optimizer.lr: interval(0.01, 0.1)\n"
    )
    with pytest.raises(ConfigError, match=r"params.learner.optimizer.lr is not allowed: .* must be choice"):
        load_family("bad", tmp_path)


def test_a_diverged_candidate_fails_and_the_others_go_on(family):
    from metalab.errors import NumericalError

    class Diverging(SyntheticArms):
        def advance(self, candidate, start, stop):
            if candidate.name == family.candidates()[-1].name:
                raise NumericalError("the penalty became inf")
            return super().advance(candidate, start, stop)

    base = arms(family, [0.1 * i for i in range(7)])
    runner = Diverging(base.ceiling, base.gap)
    budget = Budget("t", max_resource=9, min_resource=1, reduction_factor=3)
    outcome = select(family, budget, family.candidates(), runner, SynchronousHalvingPruner(1, 3))
    names = [c.name for c in family.candidates()]
    assert outcome.rungs[0].failed == [names[-1]] and names[-1] in outcome.failed
    assert outcome.choice == names[-2]  # the best of those that ran
