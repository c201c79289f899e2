"""A real ``metalab sweep`` worker whose trials train nothing: for tests of parallel workers.

Everything but the training runs as in production (composing each trial's config, the sampler and its
worker seed, the storage, the dead-worker reaping); :meth:`SweepConfig.train_trial` is replaced by a cheap
objective that records, in the trial, the values the composed config really holds for the keys the test
checks. ``python tests/sweeps/cheap_worker.py <metalab sweep arguments>``.
"""

import math
import sys
import time

from omegaconf import OmegaConf

from metalab.cli import main
from metalab.sweeps import runner

CHECKED = (
    "data.train.way",
    "model.hidden",
    "learner.optimizer.lr",
    "learner.scheduler.step_size",
    "data.train_episodes",
)


def cheap_objective(self: runner.SweepConfig, cfg, trial) -> float:
    trial.set_user_attr("config", {key: OmegaConf.select(cfg, key) for key in CHECKED})
    time.sleep(0.1)  # let the workers' trials overlap
    return -abs(math.log10(cfg.learner.optimizer.lr) + 2.5)


if __name__ == "__main__":
    runner.SweepConfig.train_trial = cheap_objective
    sys.exit(main(["sweep", *sys.argv[1:]]))
