"""The sweep, sampler, launcher and DDP configs compose and build the objects they name."""

from pathlib import Path

import hydra
import optuna
import pytest
from hydra import compose, initialize_config_dir

from metalab.sweeps.space import read_search_space

CONF = Path(__file__).resolve().parents[2] / "conf"


def composed(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "search, experiment, searched",
    [
        ("protonet_optuna", "omniglot/protonet_5w1s", {"learner.optimizer.lr", "data.train.way", "model.hidden"}),
        ("ewc_optuna", "split_mnist/ewc", {"learner.method.ewc_lambda", "learner.optimizer.lr"}),
    ],
)
def test_hparams_search_files_give_a_space_a_budget_and_a_seeded_sampler(search, experiment, searched):
    cfg = composed([f"hparams_search={search}", f"+experiment={experiment}"])
    space = read_search_space(cfg.hydra.sweeper.params)
    assert searched <= set(space.distributions)
    assert "optimized_metric" in space.fixed and "cpu_threads" in space.fixed
    assert cfg.hydra.sweeper.max_failure_rate == 1.0 and cfg.hydra.sweeper.n_trials >= 20
    sampler = hydra.utils.instantiate(cfg.hydra.sweeper.sampler)
    assert isinstance(sampler, optuna.samplers.TPESampler)


@pytest.mark.parametrize("name, cls", [("gp", optuna.samplers.GPSampler), ("cmaes", optuna.samplers.CmaEsSampler)])
def test_other_samplers_are_options(name, cls):
    cfg = composed(["hparams_search=protonet_optuna", f"hydra/sweeper/sampler={name}"])
    assert isinstance(hydra.utils.instantiate(cfg.hydra.sweeper.sampler), cls)


@pytest.mark.parametrize("name", ["median", "hyperband", "successive_halving", "threshold", "none"])
def test_pruner_configs_build_optuna_pruners(name):
    cfg = composed([f"+pruner={name}"])
    assert isinstance(hydra.utils.instantiate(cfg.pruner), optuna.pruners.BasePruner)


@pytest.mark.parametrize("launcher, target", [("submitit_slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher")])
def test_submitit_launchers_compose(launcher, target):
    cfg = composed([f"hydra/launcher={launcher}", "+experiment=split_mnist/ewc"])
    assert cfg.hydra.launcher._target_.endswith(target)


def test_ddp_cpu_builds_a_two_process_gloo_trainer():
    cfg = composed(["trainer=ddp_cpu", "+experiment=omniglot/protonet_5w1s"])
    assert cfg.trainer.devices == 2 and cfg.trainer.accelerator == "cpu"
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert strategy._process_group_backend == "gloo"
