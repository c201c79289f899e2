"""Strategy pool over the core genetic algorithm, and the knowledge graph it writes (SQLite; the API on both stores)."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from svc_helpers import auth

from metalab.search import GeneticAlgorithm, SearchSpace
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.graph import KnowledgeGraphService
from metalab.services.strategies import Objective, ProfileSpec, StrategyPoolService

GENES = {
    "batch_size": {"type": "int", "low": 8, "high": 512},
    "compression": {"type": "categorical", "choices": ["none", "lz4", "zstd"]},
    "checkpoint_interval": {"type": "float", "low": 10.0, "high": 1000.0, "log": True},
}
OPTIMUM = np.array([128.0, 2.0, np.log(200.0)])
SCALE = np.array([504.0, 2.0, np.log(100.0)])


def objectives_of(genome):
    """A job environment: speed peaks at OPTIMUM; cost grows with the batch size."""
    distance = np.linalg.norm((np.asarray(genome) - OPTIMUM) / SCALE)
    return {"speed": 100.0 - 50.0 * distance, "cost": 1.0 + genome[0] / 512}


def run_pool(session, generations, objectives):
    pool = StrategyPoolService(session, "alpha")
    profile = pool.create_profile(ProfileSpec("etl", GENES, objectives, population_size=10, seed=3))
    defaults = []
    for _ in range(generations):
        result = pool.evolve(profile.id)
        for strategy in result.pending:
            pool.record_outcome(strategy.id, {o.name: objectives_of(strategy.genome)[o.name] for o in objectives})
        defaults.append(None if result.default is None else result.default.genome)
    return pool, profile, defaults


def test_pool_runs_exactly_the_core_genetic_algorithm(sessions):
    """Reference: the same algorithm driven directly by ask/tell with the same seed, fitness negated for 'min'."""
    objectives = [Objective("speed", "max"), Objective("cost", "min")]
    with sessions() as session:
        pool, profile, defaults = run_pool(session, 4, objectives)
        session.commit()
        ga = GeneticAlgorithm(
            SearchSpace.from_config(GENES), population_size=10, survival_fraction=0.2, objectives=2, seed=3
        )
        reference_defaults = [None]
        for _ in range(3):
            asked = ga.ask()
            ga.tell(asked, [[objectives_of(c.genome)["speed"], -objectives_of(c.genome)["cost"]] for c in asked])
            reference_defaults.append(ga.best().genome.tolist())
        assert defaults[1:] == reference_defaults[1:]
        alternatives = {tuple(x.genome) for x in pool.strategies(profile.id, "alternative")}
        survivors = {tuple(c.genome.tolist()) for c in ga.population} - {tuple(reference_defaults[-1])}
        assert alternatives == survivors and len(survivors) == 1  # top 20% of 10 = 2 survive: the default and one


def test_single_objective_default_is_the_best_evaluated_and_lineage_is_in_the_graph(sessions):
    with sessions() as session:
        pool, profile, defaults = run_pool(session, 6, [Objective("speed")])
        evaluated = [x for x in pool.strategies(profile.id) if x.role != "pending"]  # told to the algorithm
        best = max(evaluated, key=lambda x: x.objective_means["speed"])  # brute force over every evaluated strategy
        assert pool.profile(profile.id).default_strategy_id == best.id
        graph = KnowledgeGraphService(session, "alpha")
        assert graph.path(f"strategy:{best.id}", f"profile:{profile.id}").__len__() == 1
        child = pool.strategies(profile.id, "pending")[0]
        expected, frontier = set(), list(child.parents)  # ancestors by walking the stored parents
        while frontier:
            parent = frontier.pop()
            if parent not in expected:
                expected.add(parent)
                frontier.extend(pool.strategy(parent).parents)
        assert expected and graph.ancestors(f"strategy:{child.id}", "evolved_from") == sorted(
            f"strategy:{i}" for i in expected
        )


def test_evolve_refuses_untested_strategies_and_bad_outcomes(sessions):
    with sessions() as session:
        pool = StrategyPoolService(session, "alpha")
        profile = pool.create_profile(ProfileSpec("p", GENES, population_size=5))
        first = pool.evolve(profile.id).pending
        with pytest.raises(Conflict, match="no outcome yet"):
            pool.evolve(profile.id)
        with pytest.raises(Conflict, match="missing: speed"):
            pool.record_outcome(first[0].id, {"sped": 1.0})
        with pytest.raises(Unprocessable, match="genes"):
            pool.create_profile(ProfileSpec("q", {"x": {"type": "float", "low": 2, "high": 1}}))
        with pytest.raises(NotFound):
            StrategyPoolService(session, "beta").evolve(profile.id)


def test_graph_types_traversal_and_export(sessions):
    with sessions() as session:
        graph = KnowledgeGraphService(session, "alpha")
        for a, b in [("oom", "halve-batch"), ("oom", "more-memory"), ("timeout", "more-memory")]:
            graph.add(f"error_pattern:{a}", "resolved_by", f"solution:{b}")
        graph.add("error_pattern:oom", "resolved_by", "solution:halve-batch")  # twice is once
        with pytest.raises(Unprocessable, match="needs a 'strategy'"):
            graph.add("pattern:1", "evolved_from", "strategy:1")
        with pytest.raises(NotFound):
            graph.add("strategy:999", "evolved_from", "strategy:998")
        chain = graph.path("error_pattern:oom", "error_pattern:timeout")
        assert [(e.source, e.target) for e in chain] == [
            ("error_pattern:oom", "solution:more-memory"),
            ("error_pattern:timeout", "solution:more-memory"),
        ]
        assert graph.path("error_pattern:oom", "solution:nothing") is None
        root = ET.fromstring(graph.export("graphml"))
        ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
        assert len(root.findall(".//g:edge", ns)) == 3 and len(root.findall(".//g:node", ns)) == 4


def test_strategy_and_graph_routes(api):
    body = {"name": "etl", "genes": GENES, "objectives": [{"name": "speed"}], "population_size": 5}
    profile = api.post("/v1/workspaces/alpha/profiles", json=body, headers=auth())
    assert profile.status_code == 201, profile.text
    pid = profile.json()["id"]
    assert api.post("/v1/workspaces/alpha/profiles", json=body, headers=auth()).status_code == 409
    bad = api.post(
        "/v1/workspaces/alpha/profiles",
        json={**body, "name": "x", "genes": {"b": {"type": "int", "low": 5, "high": 1}}},
        headers=auth(),
    )
    assert bad.status_code == 422 and "low must be <= high" in bad.json()["detail"]
    pending = api.post(f"/v1/workspaces/alpha/profiles/{pid}/evolve", headers=auth()).json()["pending"]
    assert api.post(f"/v1/workspaces/alpha/profiles/{pid}/evolve", headers=auth()).status_code == 409
    for i, strategy in enumerate(pending):
        r = api.post(
            f"/v1/workspaces/alpha/strategies/{strategy['id']}/outcomes",
            json={"values": {"speed": float(i)}},
            headers=auth(),
        )
        assert r.status_code == 201, r.text
    evolved = api.post(f"/v1/workspaces/alpha/profiles/{pid}/evolve", headers=auth()).json()
    assert evolved["default"]["id"] == pending[-1]["id"] and evolved["profile"]["generation"] == 1
    child = evolved["pending"][0]["id"]
    ancestors = api.get("/v1/workspaces/alpha/graph/ancestors", params={"node": f"strategy:{child}"}, headers=auth())
    assert ancestors.status_code == 200 and ancestors.json()["ancestors"]
    assert (
        api.get("/v1/workspaces/alpha/graph/ancestors", params={"node": "strategy"}, headers=auth()).status_code == 422
    )
    export = api.get("/v1/workspaces/alpha/graph/export", params={"format": "json"}, headers=auth())
    assert export.status_code == 200 and len(export.json()["edges"]) >= len(evolved["pending"])
