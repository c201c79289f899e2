"""Train and test one configuration: ``python train.py +experiment=omniglot/protonet_5w1s``.

Thin on purpose: Hydra composes ``conf/``, :func:`metalab.run.train` does the work and returns the
metric a sweep optimises. Mistakes in the input (an unknown experiment or key, a value out of range,
a missing or corrupt data file) end with one ``error:`` line and exit status 2, not a traceback.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metalab.cli_errors import exit_on_bad_overrides
from metalab.errors import MetalabError
from metalab.noise import quiet_third_party
from metalab.run import train

CONFIG_DIR, CONFIG_NAME = "conf", "train"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except MetalabError as error:
        print(f"error: {error}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep records this trial as failed and goes on; exiting would end the sweep
        sys.exit(2)


if __name__ == "__main__":
    quiet_third_party()  # before Hydra: a sweeper's library warnings come before the first run
    exit_on_bad_overrides(CONFIG_DIR, CONFIG_NAME, sys.argv[1:])
    main()
