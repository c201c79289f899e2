"""Every experiment file composes into a full config, and every ``_target_`` in it instantiates as a run
builds it (``metalab.run.build_run``): a typo in a target, or a keyword a class does not take, fails here
and not in a user's run. No data is read (data modules load in ``setup``), so this needs no data files."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from metalab.config_checks import check_run_config
from metalab.errors import DataError
from metalab.run import build_run

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml")
)


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _target_paths(node, where: str = "") -> list[str]:
    """The config path of every node that holds a ``_target_`` (nested ones included)."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append(where)
        for key in node:
            found += _target_paths(node[key], f"{where}.{key}" if where else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += _target_paths(item, f"{where}[{i}]")
    return found


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_every_target_instantiates(name, tmp_path):
    cfg = _compose([f"+experiment={name}", f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}"])
    if not name.endswith("/base"):  # shared bases of a suite are not runs of their own
        assert cfg.task_name != "train", "an experiment must name its task"
    if name.endswith("/base") and OmegaConf.missing_keys(cfg):
        return  # a base that leaves a choice to the files built on it (nas/base: the searcher)
    targets = _target_paths(cfg)
    assert {"learner", "trainer"} <= set(targets) and ("data" in targets) != ("problem" in targets)  # data or a problem
    for path in targets:  # every target names an importable object, also those a run does not build itself
        hydra.utils.get_object(OmegaConf.select(cfg, path)["_target_"])
    check_run_config(cfg)  # what train() checks first (seed, threads, max_time, every optimiser) holds for each
    try:
        objects = build_run(cfg, measure=False)
    except DataError as error:  # a constructor that reads data (nas_cells builds its CIFAR-10 split)
        pytest.skip(f"{name} reads data when built and it is absent: {str(error).split(';')[0]}")
    assert objects.trainer.max_steps == cfg.trainer.get("max_steps", -1)


@pytest.mark.parametrize("learner", ["maml", "fomaml", "anil", "metasgd", "reptile"])
def test_the_serial_engine_named_by_the_fast_path_error_is_a_key(learner, tmp_path):
    """The grouped path's geometry error tells the user to set ``learner.engine=serial``: that override
    must compose for every learner of the MAML family (it did not for Reptile, whose file lacked the key)."""
    cfg = _compose([f"learner={learner}", "learner.engine=serial", f"paths.output_dir={tmp_path}"])
    assert cfg.learner.engine == "serial"


def test_a_misspelt_target_fails_here(tmp_path):
    """The check above is not vacuous: one wrong letter in a target is caught."""
    cfg = _compose(
        [
            "+experiment=split_mnist/ewc",
            "learner.method._target_=metalab.learners.continual.EWK",
            f"paths.output_dir={tmp_path}",
            f"paths.log_dir={tmp_path}",
        ]
    )
    with pytest.raises(Exception, match="EWK"):
        build_run(cfg, measure=False)


def test_derived_experiments_keep_their_base():
    fomaml = _compose(["+experiment=omniglot/fomaml_5w1s"])
    anil = _compose(["+experiment=omniglot/anil_20w1s"])
    proto20 = _compose(["+experiment=omniglot/protonet_20w1s"])
    assert fomaml.learner.first_order and fomaml.data.tasks_per_batch == 32
    assert anil.learner.adapt == "head" and anil.model.out_features == 20
    assert proto20.optimized_metric == "test/20w1s/acc" and proto20.data.train.shot == 1


def test_debug_group_holds_under_an_experiment(tmp_path):
    """``+experiment`` is applied after ``debug``: the debug keys are ones no experiment sets."""
    cfg = _compose(["+experiment=omniglot/maml_5w1s", "debug=fdr"])
    assert cfg.trainer.fast_dev_run == 1 and cfg.trainer.detect_anomaly and cfg.trainer.accelerator == "cpu"
    assert "local" not in cfg  # conf/local/default.yaml is optional (gitignored) and holds no key of its own
