"""Feature alignment between a source and a target domain: the CORAL loss (Sun & Saenko 2016).

Deep CORAL (B. Sun and K. Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
ECCV 2016 Workshops, Eqs. 1-3) trains a network on labelled source data while pulling the second-order
statistics of its features on source and (unlabelled) target data together:

    l_CORAL = || C_S - C_T ||_F^2 / (4 d^2),
    C = (D^T D - (1^T D)^T (1^T D) / n) / (n - 1)        (the unbiased feature covariance of a batch D [n, d]).

The loss needs no target labels, which is why it can use the unlabelled target pool; the ``1 / (4 d^2)``
makes its scale independent of the feature width. Written here once, in plain torch ops (differentiable
in both arguments), and held against NumPy's covariance by ``tests/adapt/test_alignment.py``.
"""

from __future__ import annotations

import torch

from metalab.errors import ConfigError


def feature_covariance(features: torch.Tensor) -> torch.Tensor:
    """``"n d -> d d"``: the unbiased covariance of the rows of ``features`` (Sun & Saenko 2016, Eq. 2)."""
    n = features.shape[0]
    if features.dim() != 2 or n < 2:
        raise ConfigError(f"CORAL needs a batch of at least 2 feature rows [n, d]; got shape {tuple(features.shape)}")
    column_sums = features.sum(dim=0, keepdim=True)  # 1^T D
    return (features.T @ features - column_sums.T @ column_sums / n) / (n - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The CORAL distance ``||C_S - C_T||_F^2 / (4 d^2)`` of two feature batches ``[n_s, d]`` and ``[n_t, d]``."""
    if source.shape[1:] != target.shape[1:]:
        raise ConfigError(
            f"CORAL compares features of the same width; got source {tuple(source.shape)} and target "
            f"{tuple(target.shape)}"
        )
    d = source.shape[1]
    difference = feature_covariance(source) - feature_covariance(target)
    return (difference * difference).sum() / (4 * d * d)
