"""Every experiment file composes into a full config (catches broken defaults lists and keys)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+experiment={name}"])
    if not name.endswith("/base"):  # shared bases of a suite are not runs of their own
        assert cfg.task_name != "train", "an experiment must name its task"
    assert "_target_" in cfg.data and "_target_" in cfg.learner and "_target_" in cfg.model


def test_derived_experiments_keep_their_base():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        fomaml = compose(config_name="train", overrides=["+experiment=omniglot/fomaml_5w1s"])
        anil = compose(config_name="train", overrides=["+experiment=omniglot/anil_20w1s"])
        proto20 = compose(config_name="train", overrides=["+experiment=omniglot/protonet_20w1s"])
    assert fomaml.learner.first_order and fomaml.data.tasks_per_batch == 32
    assert anil.learner.adapt == "head" and anil.model.out_features == 20
    assert proto20.optimized_metric == "test/20w1s/acc" and proto20.data.train.shot == 1
