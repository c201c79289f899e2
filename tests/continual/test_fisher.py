"""The exact layer-wise Fisher against a per-sample backward loop, and the batch-mean bug it avoids."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metalab.errors import ConfigError
from metalab.learners.continual.fisher import (
    diagonal_fisher,
    fisher_by_sample_loop,
    per_sample_squared_grads,
    squared_batch_mean_gradient,
)
from metalab.models.mlp import MLP
from metalab.models.resnet import ResNet18


def _with_running_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give batch norm non-trivial running statistics (a few training-mode forwards)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.1 * torch.randn_like(x))
    return model


class OddConvNet(nn.Module):
    """Strided, dilated, biased convs and a linear layer over a sequence axis: the layouts the closed forms cover."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3, stride=2, padding=1, bias=True)
        self.conv2 = nn.Conv2d(5, 4, (3, 2), dilation=(1, 2), padding=(1, 0), bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.seq = nn.Linear(4, 6)  # applied per spatial position: input "n t 4"
        self.out = nn.Linear(6, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv2(torch.tanh(self.conv1(x))))
        tokens = h.flatten(2).transpose(1, 2)  # "n c h w -> n (h w) c"
        return self.out(torch.tanh(self.seq(tokens)).mean(1))


@pytest.mark.parametrize(
    "build, shape, classes",
    [
        (lambda: MLP(36, (12, 9), n_classes=10), (11, 1, 6, 6), 10),
        (lambda: ResNet18(n_classes=10, nf=4), (7, 3, 8, 8), 10),
        (OddConvNet, (6, 2, 9, 9), 7),  # few output positions: the unfold path
        (OddConvNet, (5, 2, 40, 36), 7),  # many output positions: the grouped weight-backward path
    ],
)
def test_layerwise_fisher_matches_per_sample_loop_float64(build, shape, classes):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    y = torch.randint(0, classes, (shape[0],))
    model = _with_running_stats(build().double(), x)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # chunking must not change the result
    exact = diagonal_fisher(model, batches)
    reference = fisher_by_sample_loop(model, x, y)
    assert exact.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(exact[name], reference[name], rtol=1e-6, atol=1e-12, msg=name)
    assert model.training, "the model's mode must be restored"


def test_batch_mean_squaring_is_not_the_fisher():
    """Avalanche-style (mean gradient)^2 drops the per-sample variance: far from E[g^2] on reduced ResNet-18."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    model = _with_running_stats(ResNet18(nf=4).double(), x)
    exact = diagonal_fisher(model, [(x, y)])
    approx = squared_batch_mean_gradient(model, [(x[:8], y[:8]), (x[8:], y[8:])], train_mode=False)
    num = sum(((approx[n] - exact[n]) ** 2).sum() for n in exact).sqrt()
    den = sum((exact[n] ** 2).sum() for n in exact).sqrt()
    assert num / den > 0.5
    # and it is systematically smaller: Jensen, (E g)^2 <= E[g^2] summed over a batch
    assert sum(approx[n].sum() for n in exact) < sum(exact[n].sum() for n in exact)


def test_sampled_label_fisher_is_seeded_and_differs_from_empirical():
    torch.manual_seed(0)
    x = torch.randn(20, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 10, (20,))
    model = MLP(36, (8,)).double()
    a = diagonal_fisher(model, [(x, y)], sampled=True, generator=torch.Generator().manual_seed(3))
    b = diagonal_fisher(model, [(x, y)], sampled=True, generator=torch.Generator().manual_seed(3))
    empirical = diagonal_fisher(model, [(x, y)])
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert any(not torch.allclose(a[n], empirical[n]) for n in a)


def test_frozen_parameters_are_left_out_and_unsupported_layers_are_named():
    model = MLP(36, (8,))
    model.stages[0][1].requires_grad_(False)
    grads = per_sample_squared_grads(model.eval(), torch.randn(3, 36), torch.tensor([0, 1, 2]))
    assert set(grads) == {"head.weight", "head.bias"}

    class WithEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            return self.out(self.emb(x))

    with pytest.raises(ConfigError, match="emb"):
        per_sample_squared_grads(WithEmbedding(), torch.tensor([1, 2]), torch.tensor([0, 1]))


def test_linear_layers_use_the_fused_fisher_kernels_where_triton_runs(monkeypatch):
    """Where Triton runs (forced here, interpreted on CPU), the Fisher of linear layers comes from
    kernels.linear_fisher / linear_fisher_bias and equals the torch path and the per-sample loop."""
    from metalab import kernels

    if not kernels.interpreter_active():
        pytest.skip("Triton runs on CPU only with TRITON_INTERPRET=1 set before import")
    calls = []
    for op in ("linear_fisher", "linear_fisher_bias"):
        fused = getattr(kernels, op)
        monkeypatch.setattr(kernels, op, lambda *a, _f=fused, _op=op, **k: calls.append(_op) or _f(*a, **k))
    torch.manual_seed(0)
    model = MLP(36, (12, 9), n_classes=10).double()
    x, y = torch.randn(11, 1, 6, 6, dtype=torch.float64), torch.randint(0, 10, (11,))
    with kernels.backend("torch"):
        torch_path = diagonal_fisher(model, [(x, y)])
    assert not calls
    with kernels.backend("triton"):
        fused_path = diagonal_fisher(model, [(x, y)])
    assert calls.count("linear_fisher") == 3 and calls.count("linear_fisher_bias") == 3  # three linear layers
    reference = fisher_by_sample_loop(model, x, y)
    for name in reference:
        torch.testing.assert_close(fused_path[name], torch_path[name], rtol=1e-10, atol=1e-14, msg=name)
        torch.testing.assert_close(fused_path[name], reference[name], rtol=1e-6, atol=1e-12, msg=name)
