"""Search spaces and storages: what a sweep reads before its first trial, and the messages it gives."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from metalab.errors import ConfigError
from metalab.sweeps.space import read_search_space
from metalab.sweeps.storage import open_storage, redact_password


def test_sweeps_become_distributions_and_plain_values_stay_fixed():
    space = read_search_space(
        {
            "learner.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
            "model.hidden": "choice(32, 64)",
            "learner.scheduler.step_size": "int(interval(10, 20))",
            "data.train_episodes": "15",
            "test": "False",
        }
    )
    lr = space.distributions["learner.optimizer.lr"]
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
    assert isinstance(space.distributions["model.hidden"], CategoricalDistribution)
    assert isinstance(space.distributions["learner.scheduler.step_size"], IntDistribution)
    assert space.fixed == {"data.train_episodes": "15", "test": "False"}
    # fixed entries come first, sampled ones last: both outrank the config files as overrides
    assert space.trial_overrides({"model.hidden": 32, "learner.optimizer.lr": 0.001}) == [
        "data.train_episodes=15",
        "test=False",
        "model.hidden=32",
        "learner.optimizer.lr=0.001",
    ]


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "nothing to search"),
        (None, "nothing to search"),
        ({"data.train_episodes": "15"}, "nothing to search"),
        ({"learner.optimizer.lr": "interval(1e-4,"}, "hydra.sweeper.params.learner.optimizer.lr: cannot read"),
        ({"learner.optimizer.lr": "interval(0.1, 0.01)"}, "learner.optimizer.lr"),
        ({"model.hidden": "choice()"}, "model.hidden"),
    ],
)
def test_bad_search_spaces_are_one_clear_error(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        read_search_space(params)
    assert "\n" not in str(error.value)


def test_unreachable_database_fails_at_once_with_the_reason():
    with pytest.raises(ConfigError, match="cannot be reached .*refused") as error:
        open_storage("postgresql+psycopg://postgres:secret@127.0.0.1:1/optuna")
    assert "secret" not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spec", ["not-a-url", "nosuchdriver://host/db"])
def test_malformed_storage_specs_are_refused(spec):
    with pytest.raises(ConfigError, match="storage"):
        open_storage(spec)


def test_journal_and_sqlite_storages_hold_a_study(tmp_path):
    for spec in (f"journal:{tmp_path / 'j' / 'study.log'}", f"sqlite:///{tmp_path / 's' / 'study.db'}"):
        study = optuna.create_study(storage=open_storage(spec), study_name="s")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        again = optuna.load_study(storage=open_storage(spec), study_name="s")
        assert len(again.trials) == 2


def test_passwords_are_redacted():
    assert redact_password("postgresql+psycopg://me:pw@db:5432/x") == "postgresql+psycopg://me:***@db:5432/x"
    assert redact_password("sqlite:///a.db") == "sqlite:///a.db"
