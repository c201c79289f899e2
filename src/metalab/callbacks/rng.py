"""Save and restore every RNG in checkpoints, so a resumed run continues as if never stopped."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGStateInCheckpoint(L.Callback):
    """Stores python, numpy and torch (CPU and CUDA) RNG states in the checkpoint and reloads them.

    Episodes are drawn from their own seeded generators (``metalab.data.episodes``), so this matters
    for what does use global RNG: dropout, random augmentation, sampled-label Fisher, replay sampling.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # Plain types and tensors only, so checkpoints load with torch.load(weights_only=True).
        numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
