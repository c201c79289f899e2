"""Workers of one study: each gets its own index from the study's storage, and from it its own sampler seed.

Every ``metalab sweep`` process builds its sampler from the same ``hydra.sweeper.sampler`` node, so with
one seed for all, N workers draw the same random start-up points and evaluate the same parameter sets
N times. Each worker therefore registers in the study's storage first and seeds its sampler with a seed
derived from the study's seed and its index (:func:`worker_seed`).

The index is the number of a trial the worker creates in a companion study ``<study>:workers`` of the
same storage (:func:`register_worker`). Optuna hands out trial numbers atomically in every storage (an
SQL storage numbers a new trial under a row lock on its study; the journal storage appends under its file
lock and numbers in log order), so workers started at the same moment get distinct indices, and a worker
started again later gets a new one (a restarted worker does not replay the draws of its first life).
The companion study's trials record who registered (``host:pid``) and when; each trial of the study
records its worker's index and sampler seed (``worker_index``, ``sampler_seed`` user attributes).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import optuna

REGISTRY_SUFFIX = ":workers"


def register_worker(storage: Any, study_name: str) -> int:
    """This process's index among the workers that ever joined ``study_name`` (0 for the first).

    ``storage`` ``None`` (an in-memory study) has one worker only: index 0."""
    if storage is None:
        return 0
    name = study_name + REGISTRY_SUFFIX
    optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, sampler=optuna.samplers.RandomSampler()
    )  # two workers may race to create it: both load it
    study_id = storage.get_study_id_from_name(name)
    trial_id = storage.create_new_trial(study_id)  # the storage numbers it: this is the atomic step
    number = storage.get_trial_number_from_id(trial_id)
    storage.set_trial_user_attr(trial_id, "worker", f"{socket.gethostname()}:{os.getpid()}")
    storage.set_trial_user_attr(trial_id, "registered", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [float(number)])
    return number


def worker_seed(study_seed: int | None, index: int) -> int | None:
    """The sampler seed of worker ``index``: the study's seed for the first worker (so a one-worker sweep
    draws what it always drew), a hash of (study seed, index) for the others.

    NumPy's :class:`~numpy.random.SeedSequence` mixes the pair, so neighbouring study seeds or indices do
    not give overlapping streams (seed 1 worker 1 is not seed 2 worker 0). An unseeded study (``None``)
    stays unseeded: each process then seeds its sampler from the operating system, which already differs.
    """
    if study_seed is None:
        return None
    if index == 0:
        return int(study_seed)
    return int(np.random.SeedSequence([int(study_seed), index]).generate_state(1, dtype=np.uint32)[0])
