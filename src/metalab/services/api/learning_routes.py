"""Routes of the issue-20 services (strategy pool, knowledge graph, predictor, transfer insights, model registry,
hyperparameter governor): the same workspace auth, idempotency keys and error handling as ``app.py``.

Each route is thin: validate with the pydantic schema, call one service method, shape the answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import Response

from metalab.services.api import schemas as s
from metalab.services.api.app import (
    ERRORS,
    Cursor,
    IdempotencyKey,
    Limit,
    Workspace_,
    _page,
    _sessions,
    idempotent_write,
)
from metalab.services.governor import GovernorService, GovernorSettings, GovernorState, Knob
from metalab.services.graph import KnowledgeGraphService
from metalab.services.predictor import PredictorService
from metalab.services.registry import ModelRegistryService
from metalab.services.store.models import Strategy, StrategyProfile
from metalab.services.strategies import Objective, ProfileSpec, StrategyPoolService
from metalab.services.transfer import TransferService

ProfileId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
StrategyId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
NodeQuery = Annotated[s.NodeName, Query()]
ModelPath = Annotated[s.ModelName, Path(description="model name")]
GovernorId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
DomainPath = Annotated[s.ModelName, Path(description="domain name")]
Relation = Literal["evolved_from", "best_strategy_of", "similar_to", "resolved_by"]


def strategy_out(x: Strategy) -> s.StrategyOut:
    return s.StrategyOut(
        id=x.id,
        profile_id=x.profile_id,
        generation=x.generation,
        params=x.params,
        parents=x.parents,
        role=x.role,
        objective_means=x.objective_means,
        outcomes=x.outcomes,
    )


def profile_out(service: StrategyPoolService, p: StrategyProfile) -> s.ProfileOut:
    default = service.strategy(p.default_strategy_id) if p.default_strategy_id else None
    return s.ProfileOut(
        id=p.id,
        name=p.name,
        genes=p.genes,
        objectives=p.objectives,
        population_size=p.population_size,
        survival_fraction=p.survival_fraction,
        generation=p.generation,
        default_strategy=strategy_out(default) if default else None,
    )


def install_strategy_and_graph_routes(app: FastAPI, v1: str) -> None:
    tags = ["strategy pool"]

    @app.post(v1 + "/profiles", status_code=201, response_model=s.ProfileOut, responses=ERRORS, tags=tags)
    def create_profile(request: Request, workspace: Workspace_, body: s.ProfileCreate, key: IdempotencyKey = None):
        def write(session):
            service = StrategyPoolService(session, workspace)
            spec = ProfileSpec(
                name=body.name,
                genes={k: g.as_config() for k, g in body.genes.items()},
                objectives=[Objective(o.name, o.goal) for o in body.objectives],
                population_size=body.population_size,
                survival_fraction=body.survival_fraction,
                seed=body.seed,
            )
            return 201, profile_out(service, service.create_profile(spec))

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/profiles/{profile_id}", response_model=s.ProfileOut, responses=ERRORS, tags=tags)
    def get_profile(request: Request, workspace: Workspace_, profile_id: ProfileId):
        with _sessions(request)() as session:
            service = StrategyPoolService(session, workspace)
            return profile_out(service, service.profile(profile_id))

    @app.post(v1 + "/profiles/{profile_id}/evolve", response_model=s.EvolveOut, responses=ERRORS, tags=tags)
    def evolve(request: Request, workspace: Workspace_, profile_id: ProfileId, key: IdempotencyKey = None):
        """One generation of the core genetic algorithm: tell the pending strategies' outcomes, ask the next ones."""

        def write(session):
            service = StrategyPoolService(session, workspace)
            result = service.evolve(profile_id)
            return 200, s.EvolveOut(
                profile=profile_out(service, result.profile),
                default=strategy_out(result.default) if result.default else None,
                alternatives=[strategy_out(x) for x in result.alternatives],
                pending=[strategy_out(x) for x in result.pending],
            )

        return idempotent_write(request, workspace, key, None, write)

    @app.get(
        v1 + "/profiles/{profile_id}/strategies", response_model=s.Page[s.StrategyOut], responses=ERRORS, tags=tags
    )
    def list_strategies(
        request: Request,
        workspace: Workspace_,
        profile_id: ProfileId,
        limit: Limit = 50,
        cursor: Cursor = 0,
        role: Annotated[Literal["pending", "default", "alternative", "retired"] | None, Query()] = None,
    ):
        with _sessions(request)() as session:
            found = StrategyPoolService(session, workspace).strategies(profile_id, role, limit, cursor)
            return _page([strategy_out(x) for x in found], [x.id for x in found], limit)

    @app.post(
        v1 + "/strategies/{strategy_id}/outcomes",
        status_code=201,
        response_model=s.StrategyOut,
        responses=ERRORS,
        tags=tags,
    )
    def record_strategy_outcome(
        request: Request,
        workspace: Workspace_,
        strategy_id: StrategyId,
        body: s.StrategyOutcomeCreate,
        key: IdempotencyKey = None,
    ):
        def write(session):
            return 201, strategy_out(StrategyPoolService(session, workspace).record_outcome(strategy_id, body.values))

        return idempotent_write(request, workspace, key, body, write)

    # ---- knowledge graph ----------------------------------------------------------------------------------
    tags = ["knowledge graph"]

    @app.post(v1 + "/graph/edges", status_code=201, response_model=s.EdgeOut, responses=ERRORS, tags=tags)
    def add_edge(request: Request, workspace: Workspace_, body: s.EdgeCreate, key: IdempotencyKey = None):
        def write(session):
            e = KnowledgeGraphService(session, workspace).add(body.source, body.relation, body.target, body.attributes)
            return 201, s.EdgeOut(source=e.source, relation=e.relation, target=e.target, attributes=e.attributes)

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/graph/ancestors", response_model=s.AncestorsOut, responses=ERRORS, tags=tags)
    def graph_ancestors(
        request: Request,
        workspace: Workspace_,
        node: NodeQuery,
        relation: Annotated[Relation | None, Query()] = "evolved_from",
    ):
        """Every node reachable from ``node`` along ``relation`` edges (for evolved_from: the strategy's ancestors)."""
        with _sessions(request)() as session:
            found = KnowledgeGraphService(session, workspace).ancestors(node, relation)
            return s.AncestorsOut(node=node, relation=relation, ancestors=found)

    @app.get(v1 + "/graph/path", response_model=s.PathOut, responses=ERRORS, tags=tags)
    def graph_path(request: Request, workspace: Workspace_, source: NodeQuery, target: NodeQuery):
        """The shortest chain of relations between two nodes (either direction)."""
        with _sessions(request)() as session:
            chain = KnowledgeGraphService(session, workspace).path(source, target)
            edges = [s.EdgeOut(source=e.source, relation=e.relation, target=e.target) for e in chain or []]
            return s.PathOut(source=source, target=target, connected=chain is not None, edges=edges)

    @app.get(
        v1 + "/graph/export",
        responses={**ERRORS, 200: {"content": {"application/xml": {}, "application/json": {}}}},
        tags=tags,
    )
    def graph_export(
        request: Request, workspace: Workspace_, format: Annotated[Literal["graphml", "json"], Query()] = "graphml"
    ):
        """The workspace's graph as GraphML or networkx node-link JSON."""
        with _sessions(request)() as session:
            text = KnowledgeGraphService(session, workspace).export(format)
        return Response(text, media_type="application/xml" if format == "graphml" else "application/json")


def install_predictor_routes(app: FastAPI, v1: str) -> None:
    tags = ["performance predictor"]

    @app.post(v1 + "/completed-jobs", status_code=201, response_model=s.CompletedJobOut, responses=ERRORS, tags=tags)
    def record_completed_job(
        request: Request, workspace: Workspace_, body: s.CompletedJobCreate, key: IdempotencyKey = None
    ):
        def write(session):
            job = PredictorService(session, workspace).record(
                body.features, body.duration_s, body.error_rate, body.resources
            )
            return 201, s.CompletedJobOut(
                id=job.id,
                features=job.features,
                duration_s=job.duration_s,
                error_rate=job.error_rate,
                resources=job.resources,
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.post(v1 + "/predictions", response_model=s.JobPredictionOut, responses=ERRORS, tags=tags)
    def predict(request: Request, workspace: Workspace_, body: s.PredictionRequest):
        """Duration, error rate and resources of a new job from its k nearest completed jobs, with split-conformal
        intervals, recommended resources and risk flags (writes nothing)."""
        with _sessions(request)() as session:
            return PredictorService(session, workspace).predict(body.features, body.k, body.confidence).__dict__


def install_transfer_routes(app: FastAPI, v1: str) -> None:
    tags = ["transfer insights"]

    @app.post(v1 + "/transfer/profile", response_model=s.TransferProfileOut, responses=ERRORS, tags=tags)
    def publish_transfer_profile(
        request: Request, workspace: Workspace_, body: s.TransferProfileCreate, key: IdempotencyKey = None
    ):
        def write(session):
            p = TransferService(session, workspace).publish(body.features, body.metrics, body.budget_epsilon)
            return 200, s.TransferProfileOut(
                workspace=p.workspace, features=p.features, metrics=p.metrics, budget_epsilon=p.budget_epsilon
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/transfer/budget", response_model=s.BudgetOut, responses=ERRORS, tags=tags)
    def privacy_budget(request: Request, workspace: Workspace_):
        with _sessions(request)() as session:
            return TransferService(session, workspace).budget()

    @app.get(v1 + "/transfer/cohort", response_model=s.CohortOut, responses=ERRORS, tags=tags)
    def transfer_cohort(
        request: Request,
        workspace: Workspace_,
        metric: Annotated[s.GeneName, Query()],
        min_similarity: Annotated[float, Query(ge=-1.0, le=1.0)] = 0.8,
    ):
        """Whether enough similar workspaces share ``metric`` for an insight (no names, no exact count)."""
        with _sessions(request)() as session:
            enough = TransferService(session, workspace).enough_similar(metric, min_similarity)
            return s.CohortOut(metric=metric, enough_for_insights=enough)

    @app.post(v1 + "/transfer/insights", response_model=s.InsightOut, responses=ERRORS, tags=tags)
    def transfer_insight(request: Request, workspace: Workspace_, body: s.InsightRequest, key: IdempotencyKey = None):
        """A differentially private mean over similar workspaces (OpenDP Gaussian mechanism), charged to each
        contributor's privacy budget; 403 once a contributor's budget would be exceeded."""

        def write(session):
            release, minimum = TransferService(session, workspace).insight(
                body.metric, body.lower, body.upper, body.epsilon, body.min_similarity
            )
            return 200, s.InsightOut(metric=body.metric, min_workspaces=minimum, **release.__dict__)

        return idempotent_write(request, workspace, key, body, write)


def version_out(v, active: str | None) -> s.ModelVersionOut:
    return s.ModelVersionOut(
        model=v.model,
        version=v.version,
        metrics=v.metrics,
        artifact=v.artifact,
        active=v.version == active,
        created_at=v.created_at,
    )


def install_registry_routes(app: FastAPI, v1: str) -> None:
    tags = ["model registry"]

    @app.post(
        v1 + "/models/{model}/versions", status_code=201, response_model=s.ModelVersionOut, responses=ERRORS, tags=tags
    )
    def register_model_version(
        request: Request,
        workspace: Workspace_,
        model: ModelPath,
        body: s.ModelVersionCreate,
        key: IdempotencyKey = None,
    ):
        def write(session):
            service = ModelRegistryService(session, workspace)
            v = service.register(model, body.version, body.metrics, body.artifact, body.reference, body.activate)
            return 201, version_out(v, service.model(model).active_version)

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/models/{model}", response_model=s.ModelOut, responses=ERRORS, tags=tags)
    def get_model(request: Request, workspace: Workspace_, model: ModelPath):
        with _sessions(request)() as session:
            service = ModelRegistryService(session, workspace)
            active = service.model(model).active_version
            return s.ModelOut(
                name=model, active_version=active, versions=[version_out(v, active) for v in service.versions(model)]
            )

    @app.post(v1 + "/models/{model}/drift", response_model=s.DriftOut, responses=ERRORS, tags=tags)
    def check_drift(
        request: Request, workspace: Workspace_, model: ModelPath, body: s.DriftRequest, key: IdempotencyKey = None
    ):
        """t-test, Kolmogorov-Smirnov and PSI of recent inputs against the active version's reference sample;
        the level (none / warning / critical) and recommendation; a critical check requests a retrain."""

        def write(session):
            service = ModelRegistryService(session, workspace)
            report = service.check_drift(model, body.recent)
            return 200, s.DriftOut(
                model=model,
                version=service.model(model).active_version,
                retrain_requested=report.level == "critical",
                **report.as_dict(),
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.post(v1 + "/models/{model}/rollback", response_model=s.ModelVersionOut, responses=ERRORS, tags=tags)
    def rollback_model(
        request: Request, workspace: Workspace_, model: ModelPath, body: s.RollbackRequest, key: IdempotencyKey = None
    ):
        """Make a named earlier version active again (recorded as a rollback event)."""

        def write(session):
            v = ModelRegistryService(session, workspace).rollback(model, body.version, body.reason)
            return 200, version_out(v, v.version)

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/models/{model}/events", response_model=s.Page[s.ModelEventOut], responses=ERRORS, tags=tags)
    def model_events(request: Request, workspace: Workspace_, model: ModelPath, limit: Limit = 50, cursor: Cursor = 0):
        with _sessions(request)() as session:
            found = ModelRegistryService(session, workspace).events(model, limit, cursor)
            items = [
                s.ModelEventOut(
                    id=e.id,
                    kind=e.kind,
                    from_version=e.from_version,
                    to_version=e.to_version,
                    details=e.details,
                    created_at=e.created_at,
                )
                for e in found
            ]
            return _page(items, [e.id for e in found], limit)


def governor_out(governor, state: GovernorState) -> s.GovernorOut:
    return s.GovernorOut(
        id=governor.id,
        name=governor.name,
        domain=governor.domain,
        values=state.values,
        good_values=state.good_values,
        ema=state.ema,
        updates=state.updates,
        cooldown_remaining=max(0, state.cooldown_until - state.updates),
        under_evaluation=state.change_at is not None,
    )


def knobs_of(spec: dict[str, s.KnobSpec]) -> list[Knob]:
    return [Knob(name, k.type, k.low, k.high, k.default) for name, k in spec.items()]


def install_governor_routes(app: FastAPI, v1: str) -> None:
    tags = ["hyperparameter governor"]

    @app.post(v1 + "/governors", status_code=201, response_model=s.GovernorOut, responses=ERRORS, tags=tags)
    def create_governor(request: Request, workspace: Workspace_, body: s.GovernorCreate, key: IdempotencyKey = None):
        def write(session):
            settings = GovernorSettings(
                weights=body.weights.model_dump(),
                ema_alpha=body.ema_alpha,
                cooldown=body.cooldown,
                rollback_cooldown=body.rollback_cooldown,
                evaluation_window=body.evaluation_window,
                drop_z=body.drop_z,
                min_drop=body.min_drop,
            )
            service = GovernorService(session, workspace)
            governor = service.create(body.name, body.domain, knobs_of(body.knobs), settings, body.values)
            return 201, governor_out(governor, GovernorState.from_dict(governor.state))

        return idempotent_write(request, workspace, key, body, write)

    @app.get(v1 + "/governors/{governor_id}", response_model=s.GovernorOut, responses=ERRORS, tags=tags)
    def get_governor(request: Request, workspace: Workspace_, governor_id: GovernorId):
        with _sessions(request)() as session:
            return governor_out(*GovernorService(session, workspace).get(governor_id))

    @app.post(v1 + "/governors/{governor_id}/changes", response_model=s.ChangeOut, responses=ERRORS, tags=tags)
    def change_knobs(
        request: Request, workspace: Workspace_, governor_id: GovernorId, body: s.KnobChange, key: IdempotencyKey = None
    ):
        """Set knobs (clamped into their bounds); 409 while a cooldown runs."""

        def write(session):
            service = GovernorService(session, workspace)
            state, clamped = service.change(governor_id, body.values, body.reason)
            return 200, s.ChangeOut(governor=governor_out(service.get(governor_id)[0], state), clamped=clamped)

        return idempotent_write(request, workspace, key, body, write)

    @app.post(v1 + "/governors/{governor_id}/telemetry", response_model=s.TelemetryOut, responses=ERRORS, tags=tags)
    def governor_telemetry(
        request: Request,
        workspace: Workspace_,
        governor_id: GovernorId,
        body: s.TelemetryCreate,
        key: IdempotencyKey = None,
    ):
        """One telemetry update: the meta-reward, its EMA, and a rollback or acceptance of the last change."""

        def write(session):
            service = GovernorService(session, workspace)
            state, reward, event = service.telemetry(governor_id, body.model_dump())
            return 200, s.TelemetryOut(
                governor=governor_out(service.get(governor_id)[0], state), reward=reward, event=event
            )

        return idempotent_write(request, workspace, key, body, write)

    @app.get(
        v1 + "/governors/{governor_id}/events", response_model=s.Page[s.GovernorEventOut], responses=ERRORS, tags=tags
    )
    def governor_events(
        request: Request, workspace: Workspace_, governor_id: GovernorId, limit: Limit = 50, cursor: Cursor = 0
    ):
        with _sessions(request)() as session:
            found = GovernorService(session, workspace).events(governor_id, limit, cursor)
            items = [
                s.GovernorEventOut(
                    id=e.id, update_index=e.update_index, kind=e.kind, values=e.values, details=e.details
                )
                for e in found
            ]
            return _page(items, [e.id for e in found], limit)

    @app.get(v1 + "/priors", response_model=list[s.PriorOut], responses=ERRORS, tags=tags)
    def list_priors(request: Request, workspace: Workspace_):
        """Every domain's prior and the combined one (domain ``*``)."""
        with _sessions(request)() as session:
            return [
                s.PriorOut(domain=p.domain, values=p.values, updates=p.updates)
                for p in GovernorService(session, workspace).priors()
            ]

    @app.put(v1 + "/priors/{domain}", response_model=s.PriorOut, responses=ERRORS, tags=tags)
    def set_prior(
        request: Request, workspace: Workspace_, domain: DomainPath, body: s.PriorCreate, key: IdempotencyKey = None
    ):
        def write(session):
            p = GovernorService(session, workspace).set_prior(domain, knobs_of(body.knobs), body.values)
            return 200, s.PriorOut(domain=p.domain, values=p.values, updates=p.updates)

        return idempotent_write(request, workspace, key, body, write)

    @app.post(v1 + "/priors/combine", response_model=s.CombinationOut, responses=ERRORS, tags=tags)
    def combine_priors(request: Request, workspace: Workspace_, body: s.CombineRequest, key: IdempotencyKey = None):
        """One Reptile step of the combined prior toward the diversity-weighted domains, outliers left out."""

        def write(session):
            result = GovernorService(session, workspace).combine(body.step_size)
            return 200, s.CombinationOut(values=result.values, weights=result.weights, outliers=result.outliers)

        return idempotent_write(request, workspace, key, body, write)


def install(app: FastAPI, v1: str) -> None:
    install_governor_routes(app, v1)
    install_registry_routes(app, v1)
    install_transfer_routes(app, v1)
    install_strategy_and_graph_routes(app, v1)
    install_predictor_routes(app, v1)
