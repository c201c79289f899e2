"""Request and response bodies of the HTTP API (pydantic), shared by the server and the typed client.

Inputs are bounded so that no value the schema allows can fail in the database: strings have a length
limit and no NUL character (PostgreSQL rejects it), numbers are finite, ids fit a 32-bit SQL INTEGER, and
free-form JSON (content, evidence, scores) is size-limited and finite. What the core already
declares is not copied: an experiment's body is :class:`~metalab.services.experiments.ExperimentSpec`, and
trust, patterns, analyses, predictions, drift features and prior combinations are answered as the core's
dataclasses; response models of stored rows are read from the row (``from_attributes``), not field by field.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, create_model

from metalab.services.experiments import Comparison, Decision, ExperimentSpec, VariantEstimate
from metalab.services.fields import MAX_ID, NO_NUL, Finite, JsonInt, Name, ShortName
from metalab.services.governor import Combination
from metalab.services.graph import RELATIONS
from metalab.services.patterns import FoundPattern
from metalab.services.predictor import Prediction
from metalab.services.registry import FeatureDrift
from metalab.services.trust import TrustReport

MAX_JSON_BYTES = 65_536
Text = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _check_json(value: Any) -> Any:
    """Free-form JSON must be small and finite. NUL characters are fine in it, unlike in text columns: it is
    stored as JSON text (PostgreSQL's ``json``, not ``jsonb``), where a NUL is the escape ``\\u0000``."""

    def walk(item: Any) -> None:
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2**63 - 1:
            raise ValueError("integers must fit in 64 bits")
        if isinstance(item, dict):
            for key, child in item.items():
                walk(key)
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(value)
    if len(json.dumps(value)) > MAX_JSON_BYTES:
        raise ValueError(f"must serialise to at most {MAX_JSON_BYTES} bytes of JSON")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
JsonList = Annotated[list[Any], AfterValidator(_check_json)]


class Strict(BaseModel):
    """Request bodies: unknown keys refused, no infinities or NaN, and no coercion (``false`` is not a number,
    ``"2"`` not a number; an int field takes ``2.0``, as JSON Schema's ``integer`` does: ``JsonInt``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Row(BaseModel):
    """A response read from a stored row's attributes."""

    model_config = ConfigDict(from_attributes=True)


def columns(row: Any) -> dict[str, Any]:
    """A stored row's columns as a dict (for a response that adds fields to them)."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


T = TypeVar("T")


def tighten_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """State the key pattern of every ``dict[Pattern, V]``: pydantic writes it as ``patternProperties`` only,
    which lets keys of any other form through the schema although the server refuses them (422)."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            patterns = node.get("patternProperties")
            if node.get("type") == "object" and isinstance(patterns, dict) and len(patterns) == 1:
                node.setdefault("propertyNames", {})["pattern"] = next(iter(patterns))
                node["additionalProperties"] = False
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    return schema


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: int | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


ExperimentCreate = ExperimentSpec


class VariantOut(Row):
    name: str
    count: int
    mean: float | None


class ExperimentOut(Row):
    id: int
    name: str
    status: Literal["running", "completed"]
    outcome_type: str
    allocation: str
    maximize: bool
    alpha: float
    mixture_scale: float
    min_samples_per_variant: int
    max_outcomes: int | None
    auto_complete: bool
    variants: list[VariantOut]
    winner: str | None
    decision: str | None
    reason: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, experiment: Any) -> ExperimentOut:
        return cls.model_validate(experiment)


class AssignmentOut(BaseModel):
    experiment_id: int
    variant: str
    experiment_status: str


class OutcomeCreate(Strict):
    variant: ShortName
    value: float = Field(ge=-1e12, le=1e12)
    unit: Name | None = Field(None, description="who or what received the variant (free text)")


class OutcomeOut(BaseModel):
    id: int
    experiment_id: int
    variant: str
    value: float
    unit: str | None
    created_at: datetime
    experiment_status: str
    winner: str | None


class CompleteRequest(Strict):
    winner: ShortName | None = None
    reason: Text | None = None


class AnalysisOut(BaseModel):
    experiment_id: int
    status: str
    outcomes: int
    estimates: list[VariantEstimate]
    comparisons: list[Comparison]
    decision: Decision


class RecommendationCreate(Strict):
    agent: Name
    type: ShortName
    content: JsonObject = Field(default_factory=dict)
    confidence: Probability
    reasoning: Text = ""
    evidence: JsonList = Field(default_factory=list)
    action: Name | None = Field(None, description="defaults to content['action'] when that is a string")
    subject: Name | None = Field(None, description="the decision this is about (agents agreeing on it form consensus)")


class PredictionOut(BaseModel):
    predicts_success: bool
    pattern: str
    confidence: float


class RecommendationOut(Row):
    id: int
    agent: str
    type: str = Field(validation_alias=AliasChoices("type", "kind"))
    action: str | None
    subject: str | None
    content: dict[str, Any]
    confidence: float
    reasoning: str
    evidence: list[Any]
    created_at: datetime
    evaluated: bool
    agent_trust: float | None = None
    boost: float | None = Field(None, description="decision boost from the agent's trust")
    boosted_confidence: float | None = None
    prediction: PredictionOut | None = None

    @classmethod
    def of(cls, r: Any, evaluated: bool, trust: TrustReport | None = None, prediction: Any = None) -> RecommendationOut:
        out = cls.model_validate({**columns(r), "evaluated": evaluated})
        if trust is not None:
            out.agent_trust, out.boost = trust.trust, trust.boost
            out.boosted_confidence = float(min(1.0, r.confidence * trust.boost))
        if prediction is not None:
            out.prediction = PredictionOut(
                predicts_success=prediction.predicts_success,
                pattern=prediction.description,
                confidence=prediction.confidence,
            )
        return out


class EvaluationCreate(Strict):
    overall_quality: Probability
    scores: dict[ShortName, Probability] = Field(
        default_factory=dict, max_length=50, description="quality per dimension in [0, 1]; 'timeliness' feeds trust"
    )
    success: bool | None = Field(None, description="defaults to overall_quality >= 0.5")
    feedback: Text = ""


class EvaluationOut(Row):
    id: int
    recommendation_id: int
    overall_quality: float
    scores: dict[str, float]
    success: bool
    feedback: str
    created_at: datetime


TrustOut = TrustReport


class PatternsOut(BaseModel):
    patterns: list[FoundPattern]
    accuracy: float = Field(description="share of covered evaluated recommendations the patterns predict right")
    coverage: float = Field(description="share of evaluated recommendations some pattern covers")


class JobOut(BaseModel):
    job: str
    workspace: str
    summary: dict[str, Any]


class ErrorOut(BaseModel):
    detail: str


# ---- issue 20: strategy pool and knowledge graph ---------------------------------------------------------
GeneName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
NodeName = Annotated[str, StringConstraints(min_length=3, max_length=200, pattern=r"^[a-z_]+:[A-Za-z0-9_.\-]{1,150}$")]


class _Gene(Strict):
    def as_config(self) -> dict[str, Any]:
        """The gene in :meth:`metalab.search.SearchSpace.from_config`'s form."""
        return self.model_dump()


class FloatGeneSpec(_Gene):
    type: Literal["float"]
    low: Finite = Field(description="<= high; > 0 when log")
    high: Finite
    log: bool = Field(False, description="search log(value)")


class IntGeneSpec(_Gene):
    type: Literal["int"]
    low: JsonInt = Field(ge=-MAX_ID, le=MAX_ID, description="<= high")
    high: JsonInt = Field(ge=-MAX_ID, le=MAX_ID)


class CategoricalGeneSpec(_Gene):
    type: Literal["categorical"]
    choices: list[Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)] | Finite | bool] = Field(
        min_length=1, max_length=100
    )


GeneSpec = Annotated[FloatGeneSpec | IntGeneSpec | CategoricalGeneSpec, Field(discriminator="type")]


class ObjectiveSpec(Strict):
    name: GeneName
    goal: Literal["max", "min"] = "max"


class ProfileCreate(Strict):
    name: Name
    genes: dict[GeneName, GeneSpec] = Field(min_length=1, max_length=50)
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [ObjectiveSpec(name="speed")], min_length=1, max_length=8
    )
    population_size: JsonInt = Field(20, ge=5, le=1000)
    survival_fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of the population that survives")
    seed: JsonInt = Field(0, ge=0, le=2**31 - 1)


class StrategyOut(Row):
    id: int
    profile_id: int
    generation: int
    params: dict[str, Any]
    parents: list[int]
    role: Literal["pending", "default", "alternative", "retired"]
    objective_means: dict[str, float]
    outcomes: int


class ProfileOut(Row):
    id: int
    name: str
    genes: dict[str, Any]
    objectives: list[ObjectiveSpec]
    population_size: int
    survival_fraction: float
    generation: int
    default_strategy: StrategyOut | None

    @classmethod
    def of(cls, service: Any, p: Any) -> ProfileOut:
        default = service.strategy(p.default_strategy_id) if p.default_strategy_id else None
        return cls.model_validate({**columns(p), "default_strategy": default}, from_attributes=True)


class EvolveOut(Row):
    profile: ProfileOut
    default: StrategyOut | None
    alternatives: list[StrategyOut]
    pending: list[StrategyOut] = Field(description="the new generation: run each and record its outcome")


class StrategyOutcomeCreate(Strict):
    values: dict[GeneName, Finite] = Field(min_length=1, max_length=8, description="a value per objective")


Relation = Literal[tuple(RELATIONS)]  # type: ignore[valid-type]


def _edge_model(relation: str, source_kind: str, target_kind: str) -> type[Strict]:
    """The body of an edge of one relation: its two ends' node kinds are in the schema (graph.RELATIONS)."""

    def node(kind: str) -> Any:
        return Annotated[str, StringConstraints(max_length=200, pattern=rf"^{kind}:[A-Za-z0-9_.\-]{{1,150}}$")]

    return create_model(
        "Edge_" + relation,
        __base__=Strict,
        source=(node(source_kind), ...),
        relation=(Literal[relation], ...),
        target=(node(target_kind), ...),
        attributes=(JsonObject, Field(default_factory=dict)),
    )


EdgeCreate = Annotated[
    Union[tuple(_edge_model(r, *kinds) for r, kinds in RELATIONS.items())],  # noqa: UP007
    Field(discriminator="relation"),
]


class EdgeOut(Row):
    source: str
    relation: str
    target: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class AncestorsOut(BaseModel):
    node: str
    relation: str | None
    ancestors: list[str]


class PathOut(BaseModel):
    source: str
    target: str
    connected: bool
    edges: list[EdgeOut]


# ---- performance predictor ------------------------------------------------------------------------------
FeatureVector = dict[GeneName, Finite]


class CompletedJobCreate(Strict):
    features: FeatureVector = Field(min_length=1, max_length=64, description="the job's profile vector")
    duration_s: float = Field(gt=0.0, le=1e9)
    error_rate: Probability
    resources: float = Field(gt=0.0, le=1e12, description="in the workspace's unit, e.g. core-hours")


class CompletedJobOut(Row):
    id: int
    features: dict[str, float]
    duration_s: float
    error_rate: float
    resources: float


class PredictionRequest(Strict):
    features: FeatureVector = Field(min_length=1, max_length=64)
    k: JsonInt = Field(10, ge=1, le=1000, description="neighbours")
    confidence: float = Field(0.9, ge=0.5, le=0.99, description="coverage of the split-conformal intervals")


JobPredictionOut = Prediction


# ---- transfer insights (differential privacy) --------------------------------------------------------------
class TransferProfileCreate(Strict):
    features: FeatureVector = Field(min_length=1, max_length=64, description="the workspace's profile vector")
    metrics: dict[GeneName, Finite] = Field(default_factory=dict, max_length=64, description="values it shares")
    budget_epsilon: float | None = Field(None, gt=0.0, le=100.0, description="total epsilon; set at the first publish")


class TransferProfileOut(Row):
    workspace: str
    features: dict[str, float]
    metrics: dict[str, float]
    budget_epsilon: float


class BudgetOut(BaseModel):
    budget_epsilon: float
    spent_epsilon: float
    remaining_epsilon: float
    budget_delta: float
    spent_delta: float


class InsightRequest(Strict):
    metric: GeneName
    lower: Finite = Field(description="values are clipped to [lower, upper] (public bounds); lower < upper")
    upper: Finite
    epsilon: float = Field(1.0, gt=0.0, le=10.0)
    min_similarity: float = Field(0.8, ge=-1.0, le=1.0)


class InsightOut(BaseModel):
    metric: str
    mean: float
    noisy_sum: float
    noisy_count: float
    sum_scale: float = Field(description="standard deviation of the Gaussian noise on the sum")
    count_scale: float
    epsilon: float
    delta: float
    min_workspaces: int


class CohortOut(BaseModel):
    metric: str
    enough_for_insights: bool


# ---- model registry ------------------------------------------------------------------------------------------
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]
VersionName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
# RegistryConfig.min_samples (30, the API uses the default) to registry.MAX_REFERENCE values per feature
Sample = Annotated[list[Finite], Field(min_length=30, max_length=10_000)]


class ModelVersionCreate(Strict):
    version: VersionName
    metrics: dict[GeneName, Finite] = Field(default_factory=dict, max_length=64)
    artifact: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)] = Field(
        description="where the artifact lives (a path or URI; the registry stores the reference only)"
    )
    reference: dict[GeneName, Sample] = Field(
        min_length=1, max_length=64, description="a sample of each input feature, for drift checks"
    )
    activate: bool = True


class ModelVersionOut(Row):
    model: str
    version: str
    metrics: dict[str, float]
    artifact: str
    active: bool
    created_at: datetime


class ModelOut(BaseModel):
    name: str
    active_version: str | None
    versions: list[ModelVersionOut]


class DriftRequest(Strict):
    recent: dict[GeneName, Sample] = Field(min_length=1, max_length=64, description="recent values of each feature")


class DriftOut(BaseModel):
    model: str
    version: str
    score: float = Field(description="normalised drift score of the worst feature, max(KS D, 1 - exp(-PSI))")
    level: Literal["none", "warning", "critical"]
    significant: bool
    recommendation: str
    retrain_requested: bool
    features: list[FeatureDrift]


class RollbackRequest(Strict):
    version: VersionName
    reason: Text = ""


class ModelEventOut(Row):
    id: int
    kind: str
    from_version: str | None
    to_version: str | None
    details: dict[str, Any]
    created_at: datetime


# ---- hyperparameter governor ----------------------------------------------------------------------------
KnobValue = bool | Finite


class KnobSpec(Strict):
    type: Literal["float", "int", "bool"] = "float"
    low: Finite = Field(0.0, description="<= high")
    high: Finite = 1.0
    default: KnobValue | None = None


class RewardWeights(Strict):
    gain: float = Field(1.0, ge=0.0, le=1000.0)
    stability: float = Field(0.5, ge=0.0, le=1000.0)
    resource: float = Field(0.3, ge=0.0, le=1000.0)


class GovernorCreate(Strict):
    name: ModelName
    domain: ModelName
    knobs: dict[GeneName, KnobSpec] = Field(min_length=1, max_length=64)
    values: dict[GeneName, KnobValue] = Field(default_factory=dict, description="start here instead of the priors")
    weights: RewardWeights = Field(default_factory=RewardWeights)
    ema_alpha: float = Field(0.3, gt=0.0, le=1.0)
    cooldown: JsonInt = Field(5, ge=0, le=10_000)
    rollback_cooldown: JsonInt = Field(20, ge=0, le=10_000)
    evaluation_window: JsonInt = Field(10, ge=1, le=10_000)
    drop_z: float = Field(3.0, ge=0.0, le=100.0)
    min_drop: float = Field(0.05, ge=0.0, le=1e6)


class GovernorOut(BaseModel):
    id: int
    name: str
    domain: str
    values: dict[str, Any]
    good_values: dict[str, Any]
    ema: float | None
    updates: int
    cooldown_remaining: int
    under_evaluation: bool


class KnobChange(Strict):
    values: dict[GeneName, KnobValue] = Field(min_length=1, max_length=64)
    reason: Text = ""


class ChangeOut(BaseModel):
    governor: GovernorOut
    clamped: list[str] = Field(description="knobs whose proposed value was outside its bounds and was clamped")


class TelemetryCreate(Strict):
    gain: Finite
    stability: Finite
    resource: Finite


class TelemetryOut(BaseModel):
    governor: GovernorOut
    reward: float
    event: Literal["none", "accepted", "rollback"]


class GovernorEventOut(Row):
    id: int
    update_index: int
    kind: str
    values: dict[str, Any]
    details: dict[str, Any]


class PriorCreate(Strict):
    knobs: dict[GeneName, KnobSpec] = Field(min_length=1, max_length=64)
    values: dict[GeneName, KnobValue] = Field(min_length=1, max_length=64)


class PriorOut(Row):
    domain: str
    values: dict[str, Any]
    updates: int


class CombineRequest(Strict):
    step_size: float = Field(1.0, gt=0.0, le=1.0, description="Reptile step toward the weighted mean of the domains")


CombinationOut = Combination
