"""Strategy pool: per job profile, strategies are genomes of the search package, evolved by its genetic algorithm.

A profile declares typed genes with bounds (``SearchSpace.from_config`` form: batch size, parallelism,
compression, checkpoint interval, ...) and the objectives its outcomes carry, each to maximise or
minimise (speed, error rate, resource cost per record, human interventions). ``evolve(profile)`` is one
generation of :class:`metalab.search.GeneticAlgorithm` (elitist, top ``survival_fraction`` = 20% survive,
crossover, mutation, Pareto ranking by non-dominated front and crowding when there are several
objectives):

1. the strategies asked last time (role ``pending``) are told to the algorithm with the mean of their
   recorded outcomes (minimised objectives negated: the algorithm maximises);
2. its survivors become the profile's strategies: the best (``GeneticAlgorithm.best``) is the default,
   the other survivors stay as alternatives, the rest are retired;
3. it is asked for the next generation, stored as new pending strategies with their parents
   (``evolved_from`` edges in the knowledge graph; ``best_strategy_of`` points at the default).

The algorithm's whole state (population, rng, lineage) is kept in the profile row between calls, so a
profile evolves exactly as one uninterrupted run of the core algorithm with the same seed would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metalab.errors import ConfigError
from metalab.search import Candidate, GeneticAlgorithm, SearchSpace
from metalab.services.errors import Conflict, NotFound, Unprocessable
from metalab.services.graph import KnowledgeGraphService, node
from metalab.services.store.models import Strategy, StrategyOutcome, StrategyProfile

Goal = Literal["max", "min"]


@dataclass(frozen=True)
class Objective:
    name: str
    goal: Goal = "max"


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    genes: dict[str, dict[str, Any]]
    objectives: list[Objective] = field(default_factory=lambda: [Objective("speed", "max")])
    population_size: int = 20
    survival_fraction: float = 0.2
    seed: int = 0


def space_of(genes: dict[str, dict[str, Any]]) -> SearchSpace:
    """The search package's space for a profile's genes; a bad gene is a 422 naming it."""
    try:
        return SearchSpace.from_config(genes)
    except ConfigError as error:
        raise Unprocessable(f"genes: {error}") from None


def fitness_of(means: dict[str, float], objectives: list[Objective]) -> list[float]:
    """Objective means as the algorithm's fitness row: maximised as they are, minimised negated."""
    return [means[o.name] if o.goal == "max" else -means[o.name] for o in objectives]


def to_json(value: Any) -> Any:
    """The algorithm's ``state_dict`` as JSON (numpy arrays to lists, dict keys to strings)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def genetic_algorithm(profile: StrategyProfile) -> GeneticAlgorithm:
    """The core algorithm of a profile, restored to where its last ``evolve`` left it."""
    ga = GeneticAlgorithm(
        space_of(profile.genes),
        population_size=profile.population_size,
        survival_fraction=profile.survival_fraction,
        selection="elitist",
        objectives=len(profile.objectives),
        seed=profile.seed,
    )
    if profile.ga_state is not None:
        ga.load_state_dict(profile.ga_state)
    return ga


@dataclass
class EvolveResult:
    profile: StrategyProfile
    default: Strategy | None
    alternatives: list[Strategy]
    pending: list[Strategy]


class StrategyPoolService:
    """Profiles, their strategies and outcomes, for one workspace on one session."""

    def __init__(self, session: Session, workspace: str):
        self.session, self.workspace = session, workspace
        self.graph = KnowledgeGraphService(session, workspace)

    def create_profile(self, spec: ProfileSpec) -> StrategyProfile:
        space_of(spec.genes)
        names = [o.name for o in spec.objectives]
        if not names or len(set(names)) != len(names):
            raise Unprocessable("objectives must be at least one, with distinct names")
        if spec.population_size < 5:
            raise Unprocessable("population_size must be at least 5")
        profile = StrategyProfile(
            workspace=self.workspace,
            name=spec.name,
            genes=spec.genes,
            objectives=[{"name": o.name, "goal": o.goal} for o in spec.objectives],
            population_size=spec.population_size,
            survival_fraction=spec.survival_fraction,
            seed=spec.seed,
            generation=0,
        )
        self.session.add(profile)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise Conflict(f"a profile named {spec.name!r} already exists in workspace {self.workspace!r}") from None
        return profile

    def profile(self, profile_id: int) -> StrategyProfile:
        found = self.session.scalar(
            select(StrategyProfile).where(StrategyProfile.id == profile_id, StrategyProfile.workspace == self.workspace)
        )
        if found is None:
            raise NotFound(f"profile {profile_id} not found in workspace {self.workspace!r}")
        return found

    def strategy(self, strategy_id: int) -> Strategy:
        found = self.session.scalar(
            select(Strategy).where(Strategy.id == strategy_id, Strategy.workspace == self.workspace)
        )
        if found is None:
            raise NotFound(f"strategy {strategy_id} not found in workspace {self.workspace!r}")
        return found

    def strategies(
        self, profile_id: int, role: str | None = None, limit: int = 500, after_id: int = 0
    ) -> list[Strategy]:
        query = select(Strategy).where(Strategy.profile_id == self.profile(profile_id).id, Strategy.id > after_id)
        if role is not None:
            query = query.where(Strategy.role == role)
        return list(self.session.scalars(query.order_by(Strategy.id).limit(limit)))

    def record_outcome(self, strategy_id: int, values: dict[str, float]) -> Strategy:
        """An outcome of running a strategy: a value per objective of its profile (running mean kept)."""
        strategy = self.strategy(strategy_id)
        profile = self.profile(strategy.profile_id)
        names = [o["name"] for o in profile.objectives]
        missing, extra = set(names) - set(values), set(values) - set(names)
        if missing or extra:
            raise Conflict(
                f"an outcome of profile {profile.name!r} needs exactly the objectives "
                f"{', '.join(names)} (missing: {', '.join(sorted(missing)) or '-'}; "
                f"unknown: {', '.join(sorted(extra)) or '-'})"
            )
        n = strategy.outcomes
        strategy.objective_means = {
            k: (strategy.objective_means.get(k, 0.0) * n + float(values[k])) / (n + 1) for k in names
        }
        strategy.outcomes = n + 1
        self.session.add(
            StrategyOutcome(
                workspace=self.workspace, strategy_id=strategy.id, values={k: float(values[k]) for k in names}
            )
        )
        self.session.flush()
        return strategy

    def evolve(self, profile_id: int) -> EvolveResult:
        """One generation of the core genetic algorithm (see the module docstring)."""
        profile = self.profile(profile_id)
        ga = genetic_algorithm(profile)
        objectives = [Objective(o["name"], o["goal"]) for o in profile.objectives]
        pending = self.strategies(profile.id, role="pending", limit=10**9)
        if pending:
            untried = [s.id for s in pending if s.outcomes == 0]
            if untried:
                raise Conflict(
                    f"{len(untried)} pending strategies have no outcome yet (ids {untried[:10]}); record "
                    "an outcome for each before evolving"
                )
            candidates = [
                Candidate(
                    s.candidate_id,
                    np.asarray(s.genome, dtype=np.float64),
                    tuple(int(p) for p in ga.lineage.get(s.candidate_id, {}).get("parents", [])),
                )
                for s in pending
            ]
            ga.tell(candidates, np.array([fitness_of(s.objective_means, objectives) for s in pending]))
            self._assign_roles(profile, ga)
        children = ga.ask()
        by_candidate = self._by_candidate(profile.id)
        new = []
        for child in children:
            parent_ids = [by_candidate[p].id for p in child.parents if p in by_candidate]
            strategy = Strategy(
                workspace=self.workspace,
                profile_id=profile.id,
                candidate_id=child.id,
                generation=ga.generation,
                genome=child.genome.tolist(),
                params=to_json(ga.space.decode(child.genome)),
                parents=parent_ids,
                role="pending",
            )
            self.session.add(strategy)
            new.append(strategy)
        self.session.flush()
        for strategy in new:
            for parent in strategy.parents:
                self.graph.add(node("strategy", strategy.id), "evolved_from", node("strategy", parent))
        profile.ga_state = to_json(ga.state_dict())
        profile.generation = ga.generation
        self.session.flush()
        default = self.strategy(profile.default_strategy_id) if profile.default_strategy_id else None
        return EvolveResult(profile, default, self.strategies(profile.id, role="alternative", limit=10**9), new)

    def _by_candidate(self, profile_id: int) -> dict[int, Strategy]:
        return {
            s.candidate_id: s for s in self.session.scalars(select(Strategy).where(Strategy.profile_id == profile_id))
        }

    def _assign_roles(self, profile: StrategyProfile, ga: GeneticAlgorithm) -> None:
        by_candidate = self._by_candidate(profile.id)
        survivors = {c.id for c in ga.population}
        best = by_candidate[ga.best().id]
        for candidate_id, strategy in by_candidate.items():
            if strategy.role == "pending" or strategy.role in ("default", "alternative"):
                strategy.role = "alternative" if candidate_id in survivors else "retired"
        best.role = "default"
        profile.default_strategy_id = best.id
        self.session.flush()
        self.graph.set_only_source(node("profile", profile.id), "best_strategy_of", node("strategy", best.id))
