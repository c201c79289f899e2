"""The networks of the cell space: the discrete network of one genotype and the DARTS supernet.

Macro skeleton (NAS-Bench-201's, shrunk for a 2-core CPU): a 3x3 conv stem to ``channels`` (C) maps,
then three stages of ``cells_per_stage`` (N) cells at C, 2C and 4C channels, a residual reduction block
(ResNet basic block with stride 2 and a 2x2-average-pool + 1x1-conv shortcut, as NAS-Bench-201) between
stages, then batch norm, ReLU, global average pooling and a linear classifier. NAS-Bench-201 uses C=16,
N=5; the defaults here are C=16, N=1.

Both networks are built from the same :class:`CellEdges` layout (one ``nn.ModuleDict`` per edge keyed
by operation name), so a supernet's weights load into the discrete network of any genotype by name:
the discrete network keeps only the chosen operation of each edge. That is what makes "the supernet
with one-hot architecture weights equals the discrete network" a checkable statement.
"""

from __future__ import annotations

import torch
from einops import einsum, reduce
from torch import nn

from metalab.errors import require
from metalab.nas.space import EDGES, NODES, OPERATIONS, Genotype, parse_genotype


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> batch norm (NAS-Bench-201's ``nor_conv``)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class Zero(nn.Module):
    """The ``none`` operation: the edge carries nothing (zeros of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_operation(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One operation of :data:`~metalab.nas.space.OPERATIONS` at ``channels`` in and out, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown operation {name!r}")  # unreachable from a validated Genotype


def edge_key(source: int, target: int) -> str:
    return f"{source}_{target}"


class CellEdges(nn.Module):
    """The operations of a cell, ``edges[<source>_<target>][<op name>]``; which ops exist decides the cell."""

    def __init__(self, ops_per_edge: list[tuple[str, ...]], channels: int, affine: bool) -> None:
        super().__init__()
        self.edges = nn.ModuleDict(
            {
                edge_key(source, target): nn.ModuleDict({op: make_operation(op, channels, affine) for op in ops})
                for (source, target), ops in zip(EDGES, ops_per_edge)
            }
        )

    def run(self, x: torch.Tensor, edge_output) -> torch.Tensor:
        """Node ``j`` = sum over ``i < j`` of ``edge_output(edge index, ops of edge i->j, node i)``; returns the last
        node."""
        nodes = [x]
        for target in range(1, NODES):
            total = None
            for position, (source, edge_target) in enumerate(EDGES):
                if edge_target != target:
                    continue
                out = edge_output(position, self.edges[edge_key(source, target)], nodes[source])
                total = out if total is None else total + out
            nodes.append(total)
        return nodes[-1]


class DiscreteCell(nn.Module):
    """One genotype's cell: each edge applies its single operation."""

    def __init__(self, genotype: Genotype, channels: int, affine: bool = True) -> None:
        super().__init__()
        self.genotype = genotype
        self.cell = CellEdges([(op,) for op in genotype.ops], channels, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell.run(x, lambda position, ops, node: ops[self.genotype.ops[position]](node))


def mixed_operation(ops: nn.ModuleDict, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """DARTS's mixed operation: ``sum_k weights[k] * op_k(x)`` over :data:`OPERATIONS` (``weights [ops]``).

    The ``none`` term is a zero map times its weight; it is left out of the sum (it adds exactly 0)."""
    outputs = torch.stack([ops[name](x) for name in OPERATIONS if name != "none"])
    kept = weights[[i for i, name in enumerate(OPERATIONS) if name != "none"]]
    return einsum(kept, outputs, "op, op n c h w -> n c h w")


class SearchCell(nn.Module):
    """The supernet's cell: every edge a mixed operation over all five operations; ``weights [edges, ops]``
    are given at call time (shared by all cells of the supernet). ``skip_beta`` adds DARTS-'s auxiliary
    skip connection ``beta * x`` on every edge (see :mod:`metalab.nas.darts`)."""

    def __init__(self, channels: int, affine: bool = False) -> None:
        super().__init__()
        self.cell = CellEdges([OPERATIONS] * len(EDGES), channels, affine)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, skip_beta: float = 0.0) -> torch.Tensor:
        def edge_output(position: int, ops: nn.ModuleDict, node: torch.Tensor) -> torch.Tensor:
            out = mixed_operation(ops, weights[position], node)
            return out + skip_beta * node if skip_beta else out

        return self.cell.run(x, edge_output)


class ReductionBlock(nn.Module):
    """ResNet basic block with stride 2 between stages (NAS-Bench-201's reduction): ``c -> 2c``, size / 2."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2, affine=affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, affine=affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class _Skeleton(nn.Module):
    """Stem, three stages of cells with reduction blocks between them, and the classifier."""

    def __init__(self, make_cell, channels: int, cells_per_stage: int, n_classes: int, in_channels: int) -> None:
        super().__init__()
        require(channels >= 1, "model.channels", ">= 1", channels)
        require(cells_per_stage >= 1, "model.cells_per_stage", ">= 1", cells_per_stage)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ReductionBlock(width, 2 * width))
                width *= 2
            layers += [make_cell(width) for _ in range(cells_per_stage)]
        self.layers = nn.ModuleList(layers)
        self.head_norm = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(width, n_classes)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        pooled = reduce(self.head_norm(features), "n c h w -> n c", "mean")
        return self.classifier(pooled)


class CellNetwork(_Skeleton):
    """The discrete network of one genotype (retraining, short-training fitness, the hand-designed cell)."""

    def __init__(
        self,
        genotype: Genotype | str,
        channels: int = 16,
        cells_per_stage: int = 1,
        n_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        genotype = parse_genotype(genotype)  # a config gives the string form; a bad one is one GenotypeError
        self.genotype = genotype
        super().__init__(lambda width: DiscreteCell(genotype, width), channels, cells_per_stage, n_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        for layer in self.layers:
            features = layer(features)
        return self.classify(features)


class SuperNetwork(_Skeleton):
    """DARTS's supernet: every cell a :class:`SearchCell`; ``arch_logits [edges, ops]`` (alpha) shared by all
    cells, mixed by a softmax over operations. The cells' batch norms have no affine parameters (as in
    DARTS's search), the stem, reductions and classifier do."""

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 1,
        n_classes: int = 10,
        in_channels: int = 3,
        init_scale: float = 1e-3,
        cell_affine: bool = False,
    ) -> None:
        super().__init__(
            lambda width: SearchCell(width, affine=cell_affine), channels, cells_per_stage, n_classes, in_channels
        )
        self.arch_logits = nn.Parameter(init_scale * torch.randn(len(EDGES), len(OPERATIONS)))

    def operation_weights(self) -> torch.Tensor:
        """``softmax(alpha)`` over operations, ``[edges, ops]``."""
        return torch.softmax(self.arch_logits, dim=-1)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None, skip_beta: float = 0.0) -> torch.Tensor:
        weights = self.operation_weights() if weights is None else weights
        features = self.stem(x)
        for layer in self.layers:
            features = layer(features, weights, skip_beta) if isinstance(layer, SearchCell) else layer(features)
        return self.classify(features)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but alpha (what the weight optimiser steps)."""
        return [p for name, p in self.named_parameters() if name != "arch_logits"]

    def derive(self) -> Genotype:
        """The discrete cell: the operation of highest alpha on each edge (``none`` included, as NAS-Bench-201's
        DARTS derivation)."""
        best = self.arch_logits.detach().argmax(dim=-1).tolist()
        return Genotype(tuple(OPERATIONS[i] for i in best))


def discrete_state_from_supernet(supernet: SuperNetwork, network: CellNetwork) -> dict[str, torch.Tensor]:
    """The supernet's weights restricted to ``network``'s modules (same names; alpha dropped)."""
    state = supernet.state_dict()
    return {name: state[name] for name in network.state_dict()}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
