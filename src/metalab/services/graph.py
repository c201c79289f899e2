"""Knowledge graph: typed relations between stored things, as rows of the store, traversed with networkx.

A node is ``kind:key`` (``strategy:12``, ``profile:3``, ``pattern:7``, ``error_pattern:oom-on-load``,
``solution:halve-batch``); an edge is ``source --relation--> target``. Each relation fixes the kinds at
its two ends, so a strategy can evolve only from a strategy and a profile's best is always a strategy:

==================  ===================  =================
relation            source               target
==================  ===================  =================
evolved_from        strategy             strategy
best_strategy_of    strategy             profile
similar_to          pattern              pattern
resolved_by         error_pattern        solution
==================  ===================  =================

Nodes of stored kinds (strategy, profile, pattern) must exist in the workspace; error patterns and
solutions are named freely. Traversal (ancestors, shortest paths) and export (GraphML, node-link JSON)
are networkx's; this module only loads a workspace's edges into a ``networkx.MultiDiGraph``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metalab.services.errors import NotFound, Unprocessable
from metalab.services.store.models import GraphEdge, Pattern, Strategy, StrategyProfile

RELATIONS: dict[str, tuple[str, str]] = {
    "evolved_from": ("strategy", "strategy"),
    "best_strategy_of": ("strategy", "profile"),
    "similar_to": ("pattern", "pattern"),
    "resolved_by": ("error_pattern", "solution"),
}
STORED_KINDS = {"strategy": Strategy, "profile": StrategyProfile, "pattern": Pattern}
NODE = re.compile(r"^(?P<kind>[a-z_]+):(?P<key>[A-Za-z0-9_.\-]{1,150})$")
ExportFormat = Literal["graphml", "json"]


@dataclass(frozen=True)
class Edge:
    source: str
    relation: str
    target: str
    attributes: dict[str, Any]


def node(kind: str, key: object) -> str:
    return f"{kind}:{key}"


def parse_node(text: str) -> tuple[str, str]:
    match = NODE.match(text)
    if match is None:
        raise Unprocessable(
            f"node {text!r} must be 'kind:key' (kind lowercase letters and '_', key letters, digits, "
            "'_', '.', '-', at most 150 characters)"
        )
    return match["kind"], match["key"]


def build_graph(edges: list[Edge]) -> nx.MultiDiGraph:
    """The networkx graph of ``edges``; each node carries its ``kind``, each edge its ``relation``."""
    graph = nx.MultiDiGraph()
    for e in edges:
        for end in (e.source, e.target):
            graph.add_node(end, kind=parse_node(end)[0])
        graph.add_edge(
            e.source,
            e.target,
            key=e.relation,
            relation=e.relation,
            **{k: v for k, v in e.attributes.items() if isinstance(v, (str, int, float, bool))},
        )
    return graph


def ancestors(graph: nx.MultiDiGraph, start: str, relation: str | None = None) -> list[str]:
    """Every node reachable from ``start`` along edges of ``relation`` (all relations if None): for
    ``evolved_from`` these are a strategy's ancestors."""
    if start not in graph:
        return []
    view = graph if relation is None else nx.subgraph_view(graph, filter_edge=lambda u, v, k: k == relation)
    return sorted(nx.descendants(view, start))


def path_between(graph: nx.MultiDiGraph, source: str, target: str) -> list[Edge] | None:
    """The shortest chain of relations linking two nodes, each edge in its stored direction (None: unlinked)."""
    if source not in graph or target not in graph:
        return None
    try:
        nodes = nx.shortest_path(graph.to_undirected(as_view=True), source, target)
    except nx.NetworkXNoPath:
        return None
    chain = []
    for a, b in zip(nodes, nodes[1:]):
        forward = graph.has_edge(a, b)
        u, v = (a, b) if forward else (b, a)
        relation = sorted(graph[u][v])[0]
        chain.append(Edge(u, relation, v, {}))
    return chain


def export(graph: nx.MultiDiGraph, fmt: ExportFormat) -> str:
    """GraphML (``networkx.write_graphml``) or node-link JSON (``networkx.node_link_data``)."""
    if fmt == "graphml":
        buffer = io.BytesIO()
        nx.write_graphml(graph, buffer)
        return buffer.getvalue().decode()
    return json.dumps(nx.node_link_data(graph, edges="edges"), sort_keys=True)


class KnowledgeGraphService:
    """The edges of one workspace on one session."""

    def __init__(self, session: Session, workspace: str):
        self.session, self.workspace = session, workspace

    def _check_node(self, text: str, expected_kind: str, relation: str) -> None:
        kind, key = parse_node(text)
        if kind != expected_kind:
            raise Unprocessable(f"relation {relation!r} needs a {expected_kind!r} node here, got {text!r}")
        model = STORED_KINDS.get(kind)
        if model is None:
            return
        found = (
            key.isdigit()
            and self.session.scalar(select(model.id).where(model.id == int(key), model.workspace == self.workspace))
            is not None
        )
        if not found:
            raise NotFound(f"{kind} {key} not found in workspace {self.workspace!r}")

    def add(self, source: str, relation: str, target: str, attributes: dict[str, Any] | None = None) -> GraphEdge:
        """Store an edge (an existing identical edge is returned as it is: adding twice is harmless)."""
        if relation not in RELATIONS:
            raise Unprocessable(f"relation {relation!r} is not known; the relations are {', '.join(RELATIONS)}")
        source_kind, target_kind = RELATIONS[relation]
        self._check_node(source, source_kind, relation)
        self._check_node(target, target_kind, relation)
        existing = self.session.scalar(
            select(GraphEdge).where(
                GraphEdge.workspace == self.workspace,
                GraphEdge.source == source,
                GraphEdge.relation == relation,
                GraphEdge.target == target,
            )
        )
        if existing is not None:
            return existing
        edge = GraphEdge(
            workspace=self.workspace, source=source, relation=relation, target=target, attributes=attributes or {}
        )
        self.session.add(edge)
        self.session.flush()
        return edge

    def set_only_source(self, target: str, relation: str, source: str) -> None:
        """Make ``source`` the only ``relation`` edge into ``target`` (a profile has one best strategy)."""
        self.session.execute(
            delete(GraphEdge).where(
                GraphEdge.workspace == self.workspace, GraphEdge.relation == relation, GraphEdge.target == target
            )
        )
        self.add(source, relation, target)

    def edges(self) -> list[Edge]:
        rows = self.session.scalars(
            select(GraphEdge).where(GraphEdge.workspace == self.workspace).order_by(GraphEdge.id)
        )
        return [Edge(r.source, r.relation, r.target, r.attributes) for r in rows]

    def graph(self) -> nx.MultiDiGraph:
        return build_graph(self.edges())

    def ancestors(self, start: str, relation: str | None = None) -> list[str]:
        parse_node(start)
        if relation is not None and relation not in RELATIONS:
            raise Unprocessable(f"relation {relation!r} is not known; the relations are {', '.join(RELATIONS)}")
        graph = self.graph()
        if start not in graph:
            raise NotFound(f"node {start!r} has no relations in workspace {self.workspace!r}")
        return ancestors(graph, start, relation)

    def path(self, source: str, target: str) -> list[Edge] | None:
        parse_node(source)
        parse_node(target)
        return path_between(self.graph(), source, target)

    def export(self, fmt: ExportFormat) -> str:
        return export(self.graph(), fmt)
