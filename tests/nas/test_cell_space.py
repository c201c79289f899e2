"""The cell space: 15,625 distinct cells, the string form round-trips, bad genotypes get one clear message."""

from __future__ import annotations

import numpy as np
import pytest

from metalab.errors import ConfigError
from metalab.nas.space import (
    EDGES,
    OPERATIONS,
    RESNET_CELL,
    SPACE_SIZE,
    Genotype,
    GenotypeError,
    all_genotypes,
    search_space,
)


def test_the_space_has_15625_distinct_cells_numbered_0_to_15624():
    cells = list(all_genotypes())
    assert SPACE_SIZE == 15_625 == len(cells) == len({str(c) for c in cells})
    assert [c.index() for c in cells[:3]] == [0, 1, 2] and cells[-1].index() == 15_624
    assert len(EDGES) == 6 and EDGES[:3] == ((0, 1), (0, 2), (1, 2))


def test_nas_bench_201_string_round_trips_and_orders_edges_by_target_node():
    text = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    genotype = Genotype.parse(text)
    assert str(genotype) == text and genotype == RESNET_CELL
    assert genotype.operations_into(3) == [(0, "skip_connect"), (1, "none"), (2, "skip_connect")]
    rng = np.random.default_rng(0)
    for _ in range(50):
        cell = Genotype(tuple(OPERATIONS[i] for i in rng.integers(0, 5, size=6)))
        assert Genotype.parse(str(cell)) == cell
        assert Genotype.from_indices(cell.indices()) == cell


def test_searchers_see_six_categorical_genes_over_the_five_operations():
    space = search_space()
    assert len(space) == 6 and all(g.choices == OPERATIONS for g in space.genes)
    genome = space.sample(1, np.random.default_rng(1))[0]
    assert str(Genotype.from_indices(genome)) == str(Genotype(tuple(space.decode(genome).values())))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "|conv_5x5~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
            "unknown operation 'conv_5x5' on edge 0->1; the operations are: none, skip_connect, nor_conv_1x1, "
            "nor_conv_3x3, avg_pool_3x3",
        ),
        ("resnet", "genotype 'resnet' does not parse: expected NAS-Bench-201's form"),
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+", "does not parse"),
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "does not fit the space: it has 2 node groups, a cell has 3"),
        (
            "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~2|+|skip_connect~0|none~1|skip_connect~2|",
            "does not fit the space: node 2 must take one input from each of nodes 0, 1 in order",
        ),
        ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|skip_connect~2|", "does not fit the space: node 2"),
    ],
)
def test_a_bad_genotype_is_one_clear_config_error(text, message):
    with pytest.raises(GenotypeError) as error:
        Genotype.parse(text)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, ConfigError)


def test_an_operation_list_of_the_wrong_length_or_name_is_refused():
    with pytest.raises(GenotypeError, match="a cell has 6 edges, got 5"):
        Genotype(("none",) * 5)
    with pytest.raises(GenotypeError, match="unknown operation 'sep_conv_3x3' on edge 2->3"):
        Genotype(("none",) * 5 + ("sep_conv_3x3",))
