"""Train and test one configuration: ``python train.py +experiment=omniglot/protonet_5w1s``.

Thin on purpose: Hydra composes ``conf/``, :func:`metalab.run.train` does the work and returns the
metric a sweep optimises. Mistakes in the input end with one ``error:`` line and exit status 2.
"""

import sys

import hydra
from omegaconf import DictConfig

from metalab.errors import MetalabError
from metalab.run import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except MetalabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
