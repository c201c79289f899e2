"""Hydra's Optuna sweeper (``python train.py -m hparams_search=...``) with its inputs checked first.

The plugin (hydra-optuna-sweeper 1.3) fails late and loudly on bad input: an empty search space runs
trials that search nothing, a malformed entry or an unreachable storage ends in a traceback. This
subclass reads the space and opens the storage before the first trial (:mod:`.space`, :mod:`.storage`),
prints one ``error:`` line and exits with status 2 on a mistake, then hands over to the plugin unchanged.
A ``journal:<file>`` storage is opened here too, so ``train.py -m`` can share a study with parallel workers.
"""

from __future__ import annotations

import sys

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginOptunaSweeper

from metalab.errors import MetalabError
from metalab.sweeps.space import read_search_space
from metalab.sweeps.storage import open_storage


class OptunaSweeper(PluginOptunaSweeper):
    """The plugin's sweeper; ``sweep`` checks the space and storage before running anything."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        try:
            if impl.search_space is None:  # the plugin's deprecated search_space form is left to the plugin
                read_search_space(impl.params, arguments)
            impl.storage = open_storage(impl.storage)
        except MetalabError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        return super().sweep(arguments)
