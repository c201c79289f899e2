"""How far apart two domains are, measured on a network's features: linear MMD and the proxy A-distance.

Both compare the feature distributions of a source sample and an (unlabelled) target sample under the
same network, the quantities the domain-adaptation bounds of Ben-David et al. (2010, "A theory of learning
from different domains", Machine Learning 79) are stated in:

- **linear MMD**: the squared maximum mean discrepancy with the linear kernel ``k(x, y) = x^T y``, which is
  the squared distance between the two feature means (Gretton et al. 2012, JMLR 13, the biased estimate
  ``MMD_b^2``); cheap, and blind to anything but the first moment.
- **proxy A-distance** (Ben-David et al. 2007, "Analysis of representations for domain adaptation",
  NIPS; as used by Ganin et al. 2016, Sec. 5.1.4): ``2 (1 - 2 err)`` with ``err`` the held-out error of a
  linear classifier told to tell the domains apart; 0 when it cannot (same distribution), 2 when it
  always can. The probe here is a ridge least-squares classifier on standardised features, fitted in
  closed form on one half of each sample and scored on the other half: deterministic given the split.
"""

from __future__ import annotations

import torch

from metalab.errors import ConfigError


def linear_mmd2(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|| mean(source) - mean(target) ||^2`` of feature rows ``[n_s, d]``, ``[n_t, d]``."""
    _check_pair(source, target, 1)
    gap = source.mean(dim=0) - target.mean(dim=0)
    return (gap * gap).sum()


def proxy_a_distance(
    source: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3, generator: torch.Generator | None = None
) -> float:
    """``2 (1 - 2 err)`` of a ridge linear domain classifier trained on half of each sample, tested on the rest."""
    _check_pair(source, target, 4)
    x = torch.cat([source, target]).double()
    y = torch.cat([torch.ones(len(source)), -torch.ones(len(target))]).double()
    train = torch.zeros(len(x), dtype=torch.bool)
    for start, n in ((0, len(source)), (len(source), len(target))):  # half of each domain, at random
        train[start + torch.randperm(n, generator=generator)[: n // 2]] = True
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # standardised, with a bias
    a = z[train]
    weights = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=x.dtype), a.T @ y[train])
    predicted = torch.where(z[~train] @ weights >= 0, 1.0, -1.0).double()
    error = (predicted != y[~train]).double().mean().item()
    return 2.0 * (1.0 - 2.0 * error)


def _check_pair(source: torch.Tensor, target: torch.Tensor, at_least: int) -> None:
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ConfigError(
            f"domain distances compare feature rows of the same width; got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    if min(len(source), len(target)) < at_least:
        raise ConfigError(f"domain distances need at least {at_least} rows per domain")
