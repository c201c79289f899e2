"""Request and response bodies of the HTTP API (pydantic), shared by the server and the typed client.

Inputs are bounded so that no value the schema allows can fail in the database: strings have a length
limit and no NUL character (PostgreSQL rejects it), numbers are finite, ids fit a 32-bit SQL INTEGER, and
free-form JSON (content, evidence, scores) is size-limited and checked for the same.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# Ids, cursors and counts are stored as SQL INTEGER (SQLAlchemy's type for `int` columns): 32-bit on
# PostgreSQL, so a larger value would overflow in the database (a 500) instead of failing validation.
MAX_ID = 2**31 - 1
MAX_JSON_BYTES = 65_536
NO_NUL = r"^[^\x00]*$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
Text = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _check_json(value: Any) -> Any:
    """Free-form JSON must be small, finite and free of NUL characters (they cannot be stored everywhere)."""

    def walk(item: Any) -> None:
        if isinstance(item, str) and "\x00" in item:
            raise ValueError("strings must not contain NUL characters")
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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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


class ExperimentCreate(Strict):
    name: Name
    variants: list[ShortName] = Field(
        min_length=2,
        max_length=20,
        description="the first is the control; distinct",
        json_schema_extra={"uniqueItems": True},
    )
    outcome_type: Literal["binary", "continuous"] = "binary"
    allocation: Literal["equal", "thompson", "ucb"] = "equal"
    maximize: bool = True
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    # the mixing prior's sd in outcome sds; far below 1e-3 the test has no power, and its square underflows
    mixture_scale: float = Field(0.1, ge=1e-3, le=100.0)
    min_samples_per_variant: int = Field(100, ge=1, le=1_000_000)
    max_outcomes: int | None = Field(None, ge=2, le=MAX_ID)
    auto_complete: bool = True


class VariantOut(BaseModel):
    name: str
    count: int
    mean: float | None


class ExperimentOut(BaseModel):
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


class VariantEstimateOut(BaseModel):
    name: str
    count: int
    mean: float | None
    interval: tuple[float, float] | None = Field(description="95% interval of the mean (Wilson or Student t)")
    probability_best: float


class ComparisonOut(BaseModel):
    variant: str
    reference: str = Field(description="the control (equal allocation) or the current best arm (thompson, ucb)")
    difference: float = Field(description="mean(variant) - mean(reference)")
    interval: tuple[float, float] = Field(description="always-valid confidence sequence at level alpha/(k-1)")
    p_value_now: float = Field(description="mSPRT p-value at this look")
    p_value: float = Field(description="always-valid p-value (mSPRT, running minimum over all looks)")
    significant: bool


class DecisionOut(BaseModel):
    decision: str
    winner: str | None
    reason: str


class AnalysisOut(BaseModel):
    experiment_id: int
    status: str
    outcomes: int
    estimates: list[VariantEstimateOut]
    comparisons: list[ComparisonOut]
    decision: DecisionOut


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


class RecommendationOut(BaseModel):
    id: int
    agent: str
    type: str
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


class EvaluationCreate(Strict):
    overall_quality: Probability
    scores: dict[ShortName, Probability] = Field(
        default_factory=dict, max_length=50, description="quality per dimension in [0, 1]; 'timeliness' feeds trust"
    )
    success: bool | None = Field(None, description="defaults to overall_quality >= 0.5")
    feedback: Text = ""


class EvaluationOut(BaseModel):
    id: int
    recommendation_id: int
    overall_quality: float
    scores: dict[str, float]
    success: bool
    feedback: str
    created_at: datetime


class TrustOut(BaseModel):
    agent: str
    trust: float
    dimensions: dict[str, float | None]
    confidence_factor: float
    trend: Literal["improving", "stable", "declining"]
    evaluations: int
    trusted: bool
    boost: float


class PatternOut(BaseModel):
    kind: str
    condition: dict[str, Any]
    description: str
    predicts_success: bool
    success_rate: float
    frequency: float
    support: int
    confidence: float


class PatternsOut(BaseModel):
    patterns: list[PatternOut]
    accuracy: float = Field(description="share of covered evaluated recommendations the patterns predict right")
    coverage: float = Field(description="share of evaluated recommendations some pattern covers")


class JobOut(BaseModel):
    job: str
    workspace: str
    summary: dict[str, Any]


class ErrorOut(BaseModel):
    detail: str


# ---- issue 20: strategy pool and knowledge graph ---------------------------------------------------------
Finite = Annotated[float, Field(ge=-1e12, le=1e12)]
GeneName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
NodeName = Annotated[str, StringConstraints(min_length=3, max_length=200, pattern=r"^[a-z_]+:[A-Za-z0-9_.\-]{1,150}$")]


class GeneSpec(Strict):
    type: Literal["float", "int", "categorical"]
    low: Finite | None = None
    high: Finite | None = None
    log: bool | None = Field(None, description="float genes only: search log(value)")
    choices: list[Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)] | Finite | bool] | None = Field(
        None, min_length=1, max_length=100
    )

    def as_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ObjectiveSpec(Strict):
    name: GeneName
    goal: Literal["max", "min"] = "max"


class ProfileCreate(Strict):
    name: Name
    genes: dict[GeneName, GeneSpec] = Field(min_length=1, max_length=50)
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [ObjectiveSpec(name="speed")], min_length=1, max_length=8
    )
    population_size: int = Field(20, ge=5, le=1000)
    survival_fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of the population that survives")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class StrategyOut(BaseModel):
    id: int
    profile_id: int
    generation: int
    params: dict[str, Any]
    parents: list[int]
    role: Literal["pending", "default", "alternative", "retired"]
    objective_means: dict[str, float]
    outcomes: int


class ProfileOut(BaseModel):
    id: int
    name: str
    genes: dict[str, Any]
    objectives: list[ObjectiveSpec]
    population_size: int
    survival_fraction: float
    generation: int
    default_strategy: StrategyOut | None


class EvolveOut(BaseModel):
    profile: ProfileOut
    default: StrategyOut | None
    alternatives: list[StrategyOut]
    pending: list[StrategyOut] = Field(description="the new generation: run each and record its outcome")


class StrategyOutcomeCreate(Strict):
    values: dict[GeneName, Finite] = Field(min_length=1, max_length=8, description="a value per objective")


class EdgeCreate(Strict):
    source: NodeName
    relation: Literal["evolved_from", "best_strategy_of", "similar_to", "resolved_by"]
    target: NodeName
    attributes: JsonObject = Field(default_factory=dict)


class EdgeOut(BaseModel):
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


class CompletedJobOut(BaseModel):
    id: int
    features: dict[str, float]
    duration_s: float
    error_rate: float
    resources: float


class PredictionRequest(Strict):
    features: FeatureVector = Field(min_length=1, max_length=64)
    k: int = Field(10, ge=1, le=1000, description="neighbours")
    confidence: float = Field(0.9, ge=0.5, le=0.99, description="coverage of the split-conformal intervals")


class JobPredictionOut(BaseModel):
    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    recommended_resources: float = Field(description="upper end of the resources interval")
    risk_flags: list[str]
    neighbours: int
    library_size: int
    calibration_jobs: int
    neighbour_distance: float


# ---- transfer insights (differential privacy) --------------------------------------------------------------
class TransferProfileCreate(Strict):
    features: FeatureVector = Field(min_length=1, max_length=64, description="the workspace's profile vector")
    metrics: dict[GeneName, Finite] = Field(default_factory=dict, max_length=64, description="values it shares")
    budget_epsilon: float | None = Field(None, gt=0.0, le=100.0, description="total epsilon; set at the first publish")


class TransferProfileOut(BaseModel):
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
    lower: Finite = Field(description="values are clipped to [lower, upper] (public bounds)")
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


class ModelVersionOut(BaseModel):
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


class FeatureDriftOut(BaseModel):
    feature: str
    mean_shift: float
    t_statistic: float
    t_p_value: float
    ks_statistic: float
    ks_p_value: float
    psi: float
    score: float


class DriftOut(BaseModel):
    model: str
    version: str
    score: float = Field(description="normalised drift score of the worst feature, max(KS D, 1 - exp(-PSI))")
    level: Literal["none", "warning", "critical"]
    significant: bool
    recommendation: str
    retrain_requested: bool
    features: list[FeatureDriftOut]


class RollbackRequest(Strict):
    version: VersionName
    reason: Text = ""


class ModelEventOut(BaseModel):
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
    low: Finite = 0.0
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
    cooldown: int = Field(5, ge=0, le=10_000)
    rollback_cooldown: int = Field(20, ge=0, le=10_000)
    evaluation_window: int = Field(10, ge=1, le=10_000)
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


class GovernorEventOut(BaseModel):
    id: int
    update_index: int
    kind: str
    values: dict[str, Any]
    details: dict[str, Any]


class PriorCreate(Strict):
    knobs: dict[GeneName, KnobSpec] = Field(min_length=1, max_length=64)
    values: dict[GeneName, KnobValue] = Field(min_length=1, max_length=64)


class PriorOut(BaseModel):
    domain: str
    values: dict[str, Any]
    updates: int


class CombineRequest(Strict):
    step_size: float = Field(1.0, gt=0.0, le=1.0, description="Reptile step toward the weighted mean of the domains")


class CombinationOut(BaseModel):
    values: dict[str, Any]
    weights: dict[str, float]
    outliers: list[str]
