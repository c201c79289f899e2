"""A picture of a cell: its four nodes and the operation on each edge (``none`` edges are left out)."""

from __future__ import annotations

from pathlib import Path

from metalab.nas.space import EDGES, NODES, Genotype

_COLOURS = {
    "skip_connect": "tab:gray",
    "nor_conv_1x1": "tab:blue",
    "nor_conv_3x3": "tab:red",
    "avg_pool_3x3": "tab:green",
}


def draw_cell(genotype: Genotype, path: Path, title: str | None = None) -> Path:
    """Write ``path`` (PNG): nodes left to right, one curved arrow per edge, labelled with its operation."""
    from matplotlib.figure import Figure  # a figure of its own: pyplot's global backend is left alone
    from matplotlib.patches import Circle, FancyArrowPatch

    figure = Figure(figsize=(7, 3.2))
    axes = figure.subplots()
    positions = {node: (2.0 * node, 0.0) for node in range(NODES)}
    for (source, target), op in zip(EDGES, genotype.ops):
        if op == "none":
            continue
        span = positions[target][0] - positions[source][0]
        bend = 0.0 if target - source == 1 else 0.45 * (1 if source % 2 == 0 else -1)
        arrow = FancyArrowPatch(
            positions[source],
            positions[target],
            connectionstyle=f"arc3,rad={bend}",
            arrowstyle="-|>",
            mutation_scale=14,
            lw=1.8,
            color=_COLOURS[op],
            shrinkA=16,
            shrinkB=16,
        )
        axes.add_patch(arrow)
        middle_x = (positions[source][0] + positions[target][0]) / 2
        middle_y = 0.3 if bend == 0.0 else -bend * span / 2  # beside a straight arrow, on a curved one's apex
        axes.text(
            middle_x,
            middle_y,
            op,
            ha="center",
            va="center",
            fontsize=8,
            color=_COLOURS[op],
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for node, (x, y) in positions.items():
        label = "in" if node == 0 else ("out" if node == NODES - 1 else str(node))
        axes.add_patch(Circle((x, y), 0.28, color="black", fill=False, lw=1.5))
        axes.text(x, y, label, ha="center", va="center", fontsize=10)
    axes.set_xlim(-0.6, 2.0 * (NODES - 1) + 0.6)
    axes.set_ylim(-1.7, 1.7)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title(title or str(genotype), fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
