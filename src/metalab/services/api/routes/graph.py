"""Knowledge graph: typed edges between nodes, ancestors, shortest paths, export."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from metalab.services.api import schemas as s
from metalab.services.api.common import ERRORS, V1, IdempotencyKey, Workspace_, idempotent_write
from metalab.services.api.common import sessions_for as sessions
from metalab.services.graph import KnowledgeGraphService

router = APIRouter(prefix=V1 + "/graph", tags=["knowledge graph"], responses=ERRORS)
NodeQuery = Annotated[s.NodeName, Query()]


@router.post("/edges", status_code=201, response_model=s.EdgeOut)
def add_edge(request: Request, workspace: Workspace_, body: s.EdgeCreate, key: IdempotencyKey = None):
    def write(db):
        edge = KnowledgeGraphService(db, workspace).add(body.source, body.relation, body.target, body.attributes)
        return s.EdgeOut.model_validate(edge)

    return idempotent_write(request, workspace, key, body, write)


@router.get("/ancestors", response_model=s.AncestorsOut)
def graph_ancestors(
    request: Request,
    workspace: Workspace_,
    node: NodeQuery,
    relation: Annotated[s.Relation | None, Query()] = "evolved_from",
):
    """Every node reachable from ``node`` along ``relation`` edges (for evolved_from: the strategy's ancestors)."""
    with sessions(request)() as db:
        found = KnowledgeGraphService(db, workspace).ancestors(node, relation)
        return s.AncestorsOut(node=node, relation=relation, ancestors=found)


@router.get("/path", response_model=s.PathOut)
def graph_path(request: Request, workspace: Workspace_, source: NodeQuery, target: NodeQuery):
    """The shortest chain of relations between two nodes (either direction)."""
    with sessions(request)() as db:
        chain = KnowledgeGraphService(db, workspace).path(source, target)
        edges = [s.EdgeOut(source=e.source, relation=e.relation, target=e.target) for e in chain or []]
        return s.PathOut(source=source, target=target, connected=chain is not None, edges=edges)


@router.get("/export", responses={200: {"content": {"application/xml": {}, "application/json": {}}}})
def graph_export(
    request: Request, workspace: Workspace_, format: Annotated[Literal["graphml", "json"], Query()] = "graphml"
):
    """The workspace's graph as GraphML or networkx node-link JSON."""
    with sessions(request)() as db:
        text = KnowledgeGraphService(db, workspace).export(format)
    return Response(text, media_type="application/xml" if format == "graphml" else "application/json")
