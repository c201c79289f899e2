"""The supernet's math: a mixed operation is the softmax-weighted sum of its operations, and the supernet
with one-hot architecture weights is exactly the discrete network with the same weights."""

from __future__ import annotations

import pytest
import torch

from metalab.nas.network import (
    CellNetwork,
    SearchCell,
    SuperNetwork,
    discrete_state_from_supernet,
    make_operation,
    mixed_operation,
)
from metalab.nas.space import EDGES, OPERATIONS, RESNET_CELL, Genotype


def test_mixed_operation_is_the_softmax_weighted_sum_of_the_five_operations():
    torch.manual_seed(0)
    ops = torch.nn.ModuleDict({name: make_operation(name, 3) for name in OPERATIONS}).eval()
    x = torch.randn(2, 3, 6, 6)
    logits = torch.randn(len(OPERATIONS))
    weights = torch.softmax(logits, dim=0)
    by_hand = torch.zeros_like(x)
    for k, name in enumerate(OPERATIONS):  # written out term by term, including the zero of `none`
        term = torch.zeros_like(x) if name == "none" else ops[name](x)
        by_hand = by_hand + torch.exp(logits[k]) / torch.exp(logits).sum() * term
    torch.testing.assert_close(mixed_operation(ops, weights, x), by_hand, rtol=1e-5, atol=1e-6)


def _cell_by_hand(cell: SearchCell, weights: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    """Nodes 1..3 of a search cell from the definition: node j = sum_i (mixed op_{i->j}(node i) + beta * node i)."""
    nodes = [x]
    for target in range(1, 4):
        total = 0
        for position, (source, edge_target) in enumerate(EDGES):
            if edge_target == target:
                ops = cell.cell.edges[f"{source}_{target}"]
                mixed = sum(
                    weights[position, k] * (ops[n](nodes[source]) if n != "none" else 0)
                    for k, n in enumerate(OPERATIONS)
                )
                total = total + mixed + beta * nodes[source]
        nodes.append(total)
    return nodes[3]


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_search_cell_sums_mixed_edges_into_nodes_with_the_auxiliary_skip(beta):
    torch.manual_seed(1)
    cell = SearchCell(4, affine=False)
    weights = torch.softmax(torch.randn(len(EDGES), len(OPERATIONS)), dim=-1)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(
        cell(x, weights, skip_beta=beta), _cell_by_hand(cell, weights, x, beta), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "genotype",
    [
        RESNET_CELL,
        Genotype.parse("|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|"),
        Genotype(("none",) * 6),
    ],
)
def test_supernet_with_one_hot_weights_equals_the_discrete_network(genotype):
    torch.manual_seed(2)
    supernet = SuperNetwork(channels=4, cells_per_stage=2, cell_affine=True)
    with torch.no_grad():  # non-trivial batch-norm affine parameters, so a wrong mapping would show
        for name, p in supernet.named_parameters():
            if name.endswith(("bias", "weight")) and p.dim() == 1:
                p.uniform_(0.5, 1.5)
    network = CellNetwork(genotype, channels=4, cells_per_stage=2)
    network.load_state_dict(discrete_state_from_supernet(supernet, network))
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(genotype.indices()).long(), len(OPERATIONS)).float()
    x = torch.randn(3, 3, 8, 8)
    for mode in ("train", "eval"):
        supernet.train(mode == "train"), network.train(mode == "train")
        torch.testing.assert_close(supernet(x, weights=one_hot), network(x), rtol=1e-5, atol=1e-6)


def test_the_derived_cell_takes_the_strongest_operation_of_each_edge():
    supernet = SuperNetwork(channels=2)
    with torch.no_grad():
        supernet.arch_logits.zero_()
        for position, op in enumerate(RESNET_CELL.ops):
            supernet.arch_logits[position, OPERATIONS.index(op)] = 1.0
    assert supernet.derive() == RESNET_CELL
