"""The CORAL loss (Sun & Saenko 2016) against an independent computation with NumPy's covariance."""

import numpy as np
import pytest
import torch

from metalab.adapt.alignment import coral_loss, feature_covariance
from metalab.errors import ConfigError


def _numpy_coral(source: np.ndarray, target: np.ndarray) -> float:
    """||cov(S) - cov(T)||_F^2 / (4 d^2) with np.cov (unbiased, rows are examples): not our formula's ops."""
    d = source.shape[1]
    gap = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
    return float(np.sum(gap**2) / (4 * d * d))


def test_coral_loss_equals_numpy_on_batches_of_different_sizes():
    gen = torch.Generator().manual_seed(3)
    source = torch.randn(7, 4, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 3.0]).double()
    target = torch.randn(5, 4, generator=gen, dtype=torch.float64) + 2.0
    assert float(coral_loss(source, target)) == pytest.approx(_numpy_coral(source.numpy(), target.numpy()), rel=1e-12)
    assert torch.allclose(feature_covariance(source), torch.from_numpy(np.cov(source.numpy(), rowvar=False)))


def test_coral_loss_ignores_a_shift_of_the_mean_and_has_gradients():
    gen = torch.Generator().manual_seed(4)
    source = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert float(coral_loss(source.detach(), source.detach() + 5.0)) == pytest.approx(
        0.0, abs=1e-12
    )  # second order only
    assert torch.autograd.gradcheck(coral_loss, (source, target))


def test_coral_loss_refuses_one_row_or_different_widths():
    with pytest.raises(ConfigError, match="at least 2"):
        coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="same width"):
        coral_loss(torch.zeros(4, 3), torch.zeros(4, 2))
