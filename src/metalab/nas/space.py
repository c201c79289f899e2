"""The cell search space of NAS-Bench-201 (Dong and Yang, ICLR 2020), defined once for every searcher.

A cell is a small directed acyclic graph of ``NODES = 4`` feature maps. Node 0 is the cell's input;
node ``j`` is the sum over every earlier node ``i < j`` of one operation applied to node ``i``; node 3
is the cell's output. That makes ``len(EDGES) = 6`` edges, each carrying one of ``len(OPERATIONS) = 5``
operations, so the space holds ``5 ** 6 = 15,625`` cells.

A :class:`Genotype` names a cell by its six operations, in the edge order of NAS-Bench-201's string
form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: one ``+``-separated group per node 1..3, each listing the
operation from every earlier node, ``~i`` naming the source node. The operation names are
NAS-Bench-201's (``nor_conv_3x3`` is ReLU -> 3x3 conv -> batch norm).

Searchers see the same space as six categorical genes (:func:`search_space`), so the genetic
algorithm, random search, DARTS's derivation and retraining all speak of the same cells.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from metalab.errors import ConfigError
from metalab.search.space import CategoricalGene, SearchSpace

OPERATIONS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
PARAMETER_FREE: frozenset[str] = frozenset({"none", "skip_connect", "avg_pool_3x3"})
NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((source, target) for target in range(1, NODES) for source in range(target))
SPACE_SIZE = len(OPERATIONS) ** len(EDGES)

_GROUP = re.compile(r"^\|(?:[^|~+]+~\d+\|)+$")  # one node's group: |op~i|op~j|...


class GenotypeError(ConfigError):
    """A genotype string or operation list that is not a cell of this space; the message says what is wrong."""


def _edge_label(source: int, target: int) -> str:
    return f"edge {source}->{target}"


@dataclass(frozen=True)
class Genotype:
    """One cell: the operation on each edge, in :data:`EDGES` order (``(0,1), (0,2), (1,2), (0,3), (1,3), (2,3)``)."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != len(EDGES):
            raise GenotypeError(f"a cell has {len(EDGES)} edges, got {len(ops)} operations")
        for (source, target), op in zip(EDGES, ops):
            if op not in OPERATIONS:
                raise GenotypeError(
                    f"unknown operation {op!r} on {_edge_label(source, target)}; "
                    f"the operations are: {', '.join(OPERATIONS)}"
                )
        object.__setattr__(self, "ops", ops)

    # -------------------------------------------------------------------------------- string form
    @classmethod
    def parse(cls, text: str) -> Genotype:
        """``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|`` -> Genotype.

        Raises :class:`GenotypeError` (one line) for a string that does not parse, one that does not fit
        the 4-node cell (wrong number of nodes, inputs or source indices) and an unknown operation.
        """
        text = str(text).strip()
        groups = text.split("+")
        if not text or not all(_GROUP.match(group) for group in groups):
            raise GenotypeError(
                f"genotype {text!r} does not parse: expected NAS-Bench-201's form "
                "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| (one +-separated group per node)"
            )
        if len(groups) != NODES - 1:
            raise GenotypeError(
                f"genotype {text!r} does not fit the space: it has {len(groups)} node groups, "
                f"a cell has {NODES - 1} (nodes 1..{NODES - 1})"
            )
        ops = []
        for target, group in enumerate(groups, start=1):
            entries = [entry.rsplit("~", 1) for entry in group.strip("|").split("|")]
            sources = [int(source) for _, source in entries]
            if sources != list(range(target)):
                raise GenotypeError(
                    f"genotype {text!r} does not fit the space: node {target} must take one "
                    f"input from each of nodes {', '.join(map(str, range(target)))} in order "
                    f"(~{'|~'.join(map(str, range(target)))}), got ~{'|~'.join(map(str, sources))}"
                )
            ops += [op for op, _ in entries]
        return cls(tuple(ops))

    def __str__(self) -> str:
        groups, position = [], 0
        for target in range(1, NODES):
            entries = [f"{self.ops[position + source]}~{source}" for source in range(target)]
            groups.append("|" + "|".join(entries) + "|")
            position += target
        return "+".join(groups)

    # ------------------------------------------------------------------------- searcher encodings
    @classmethod
    def from_indices(cls, indices: Sequence[float]) -> Genotype:
        """From a genome row of :func:`search_space` (operation indices, possibly as floats)."""
        return cls(tuple(OPERATIONS[int(round(i))] for i in indices))

    def indices(self) -> np.ndarray:
        """Operation indices in edge order (a genome row of :func:`search_space`)."""
        return np.array([OPERATIONS.index(op) for op in self.ops], dtype=np.float64)

    def index(self) -> int:
        """The cell's number in ``0 .. SPACE_SIZE - 1`` (base-5 digits, first edge most significant)."""
        number = 0
        for op in self.ops:
            number = number * len(OPERATIONS) + OPERATIONS.index(op)
        return number

    def operations_into(self, target: int) -> list[tuple[int, str]]:
        """``[(source, op), ...]`` of the edges entering node ``target``."""
        return [(source, op) for (source, edge_target), op in zip(EDGES, self.ops) if edge_target == target]

    def count(self, op: str) -> int:
        return sum(o == op for o in self.ops)


def parse_genotype(value: str | Genotype) -> Genotype:
    """A genotype given either way (config values arrive as strings)."""
    return value if isinstance(value, Genotype) else Genotype.parse(value)


def all_genotypes() -> Iterator[Genotype]:
    """Every cell of the space, in :meth:`Genotype.index` order."""
    for ops in itertools.product(OPERATIONS, repeat=len(EDGES)):
        yield Genotype(ops)


def search_space() -> SearchSpace:
    """The space as the searchers see it: one categorical gene per edge, named ``edge_<source>_<target>``."""
    return SearchSpace([CategoricalGene(f"edge_{source}_{target}", OPERATIONS) for source, target in EDGES])


# The hand-designed reference of the space: NAS-Bench-201's ResNet-like cell (Dong and Yang 2020, the
# residual basic block written as a cell): node 1 = 3x3 conv of the input, node 2 = 3x3 conv of node 1,
# output = input + node 2 (two skip edges), every other edge none.
RESNET_CELL = Genotype(("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "skip_connect"))
