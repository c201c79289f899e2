"""Hyperparameter sweeps with Optuna over the same Hydra configs as ``train.py``.

Two shells over one search-space description (``conf/hparams_search/*.yaml``, ``hydra.sweeper.params``):
Hydra's Optuna sweeper (``python train.py -m hparams_search=...``, through :mod:`.hydra_sweeper`) and
:mod:`.runner` (``metalab sweep ...``), which adds pruning and worker-safe storages. Both read the search
space with :func:`.space.read_search_space` and open storages with :func:`.storage.open_storage`.
"""
