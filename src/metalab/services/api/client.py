"""A small typed client of the services API (httpx); answers are the API's own pydantic models.

Writes carry an ``Idempotency-Key`` (a fresh UUID unless one is given) and are retried with the same key
on connection errors and 5xx answers, so a retry never records anything twice. A 4xx answer raises
:class:`ApiError` with the server's message.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from metalab.services.api import schemas as s

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str):
        super().__init__(f"{status_code}: {detail}")
        self.status_code, self.detail = status_code, detail


class ServicesClient:
    def __init__(
        self,
        base_url: str,
        workspace: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ):
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers={"Authorization": f"Bearer {token}"}
        )
        self.prefix = f"/v1/workspaces/{workspace}"
        self.retries, self.backoff = retries, backoff

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServicesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, self.prefix + path, json=json, params=params, headers=headers)
            except (
                httpx.TransportError
            ) as error:  # connection refused / reset / timeout: the write may or may not have landed
                last_error = error
            else:
                if response.status_code < 500:
                    if response.status_code >= 400:
                        raise ApiError(response.status_code, response.json().get("detail", response.text))
                    return response
                last_error = ApiError(response.status_code, response.text)
            if method != "GET" and idempotency_key is None:
                break  # a write without a key cannot be retried safely
            time.sleep(self.backoff * (2 ** min(attempt, 5)))
        raise last_error  # type: ignore[misc]

    def _write(self, path: str, body: BaseModel | None, model: type[M], idempotency_key: str | None) -> M:
        key = idempotency_key or str(uuid.uuid4())
        payload = body.model_dump(mode="json", exclude_none=True) if body is not None else None
        return model.model_validate(self._request("POST", path, json=payload, idempotency_key=key).json())

    def _read(self, path: str, model: type[M], **params: Any) -> M:
        params = {k: v for k, v in params.items() if v is not None}
        return model.model_validate(self._request("GET", path, params=params).json())

    # ---- experiments --------------------------------------------------------------------------------------
    def create_experiment(self, spec: s.ExperimentCreate, idempotency_key: str | None = None) -> s.ExperimentOut:
        return self._write("/experiments", spec, s.ExperimentOut, idempotency_key)

    def experiments(self, limit: int = 50, cursor: int = 0) -> s.Page[s.ExperimentOut]:
        return self._read("/experiments", s.Page[s.ExperimentOut], limit=limit, cursor=cursor)

    def experiment(self, experiment_id: int) -> s.ExperimentOut:
        return self._read(f"/experiments/{experiment_id}", s.ExperimentOut)

    def assign(self, experiment_id: int) -> s.AssignmentOut:
        return s.AssignmentOut.model_validate(self._request("POST", f"/experiments/{experiment_id}/assignments").json())

    def record_outcome(
        self,
        experiment_id: int,
        variant: str,
        value: float,
        unit: str | None = None,
        idempotency_key: str | None = None,
    ) -> s.OutcomeOut:
        body = s.OutcomeCreate(variant=variant, value=value, unit=unit)
        return self._write(f"/experiments/{experiment_id}/outcomes", body, s.OutcomeOut, idempotency_key)

    def outcomes(self, experiment_id: int, limit: int = 500, cursor: int = 0) -> s.Page[s.OutcomeOut]:
        return self._read(f"/experiments/{experiment_id}/outcomes", s.Page[s.OutcomeOut], limit=limit, cursor=cursor)

    def all_outcomes(self, experiment_id: int) -> list[s.OutcomeOut]:
        items, cursor = [], 0
        while True:
            page = self.outcomes(experiment_id, 500, cursor)
            items.extend(page.items)
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor

    def analysis(self, experiment_id: int) -> s.AnalysisOut:
        return self._read(f"/experiments/{experiment_id}/analysis", s.AnalysisOut)

    def complete(self, experiment_id: int, winner: str | None = None, reason: str | None = None) -> s.ExperimentOut:
        return self._write(
            f"/experiments/{experiment_id}/complete",
            s.CompleteRequest(winner=winner, reason=reason),
            s.ExperimentOut,
            None,
        )

    # ---- recommendations and trust ------------------------------------------------------------------------
    def recommend(
        self, recommendation: s.RecommendationCreate, idempotency_key: str | None = None
    ) -> s.RecommendationOut:
        return self._write("/recommendations", recommendation, s.RecommendationOut, idempotency_key)

    def evaluate(
        self, recommendation_id: int, evaluation: s.EvaluationCreate, idempotency_key: str | None = None
    ) -> s.EvaluationOut:
        return self._write(
            f"/recommendations/{recommendation_id}/evaluation", evaluation, s.EvaluationOut, idempotency_key
        )

    def trust(self, agent: str) -> s.TrustOut:
        return self._read(f"/agents/{agent}/trust", s.TrustOut)

    def trusted_agents(self, threshold: float | None = None) -> list[s.TrustOut]:
        response = self._request("GET", "/trusted-agents", params={} if threshold is None else {"threshold": threshold})
        return [s.TrustOut.model_validate(item) for item in response.json()]

    def patterns(self) -> s.PatternsOut:
        return self._read("/patterns", s.PatternsOut)

    def run_job(self, job: str) -> s.JobOut:
        return self._write(f"/jobs/{job}", None, s.JobOut, None)

    # ---- strategy pool and knowledge graph (issue 20) -------------------------------------------------------
    def create_profile(self, profile: s.ProfileCreate, idempotency_key: str | None = None) -> s.ProfileOut:
        return self._write("/profiles", profile, s.ProfileOut, idempotency_key)

    def profile(self, profile_id: int) -> s.ProfileOut:
        return self._read(f"/profiles/{profile_id}", s.ProfileOut)

    def evolve(self, profile_id: int, idempotency_key: str | None = None) -> s.EvolveOut:
        return self._write(f"/profiles/{profile_id}/evolve", None, s.EvolveOut, idempotency_key)

    def strategies(
        self, profile_id: int, role: str | None = None, limit: int = 50, cursor: int = 0
    ) -> s.Page[s.StrategyOut]:
        return self._read(
            f"/profiles/{profile_id}/strategies", s.Page[s.StrategyOut], role=role, limit=limit, cursor=cursor
        )

    def record_strategy_outcome(
        self, strategy_id: int, values: dict[str, float], idempotency_key: str | None = None
    ) -> s.StrategyOut:
        return self._write(
            f"/strategies/{strategy_id}/outcomes",
            s.StrategyOutcomeCreate(values=values),
            s.StrategyOut,
            idempotency_key,
        )

    def add_edge(self, source: str, relation: str, target: str, idempotency_key: str | None = None) -> s.EdgeOut:
        return self._write(
            "/graph/edges", s.EdgeCreate(source=source, relation=relation, target=target), s.EdgeOut, idempotency_key
        )

    def ancestors(self, node: str, relation: str | None = "evolved_from") -> s.AncestorsOut:
        return self._read("/graph/ancestors", s.AncestorsOut, node=node, relation=relation)

    def path(self, source: str, target: str) -> s.PathOut:
        return self._read("/graph/path", s.PathOut, source=source, target=target)

    def export_graph(self, fmt: str = "graphml") -> str:
        return self._request("GET", "/graph/export", params={"format": fmt}).text

    # ---- performance predictor ------------------------------------------------------------------------------
    def record_completed_job(self, job: s.CompletedJobCreate, idempotency_key: str | None = None) -> s.CompletedJobOut:
        return self._write("/completed-jobs", job, s.CompletedJobOut, idempotency_key)

    def predict(self, request: s.PredictionRequest) -> s.JobPredictionOut:
        payload = request.model_dump(mode="json")
        return s.JobPredictionOut.model_validate(self._request("POST", "/predictions", json=payload).json())

    # ---- transfer insights ----------------------------------------------------------------------------------
    def publish_transfer_profile(self, profile: s.TransferProfileCreate) -> s.TransferProfileOut:
        return self._write("/transfer/profile", profile, s.TransferProfileOut, None)

    def privacy_budget(self) -> s.BudgetOut:
        return self._read("/transfer/budget", s.BudgetOut)

    def transfer_cohort(self, metric: str, min_similarity: float = 0.8) -> s.CohortOut:
        return self._read("/transfer/cohort", s.CohortOut, metric=metric, min_similarity=min_similarity)

    def insight(self, request: s.InsightRequest, idempotency_key: str | None = None) -> s.InsightOut:
        return self._write("/transfer/insights", request, s.InsightOut, idempotency_key)

    # ---- model registry -------------------------------------------------------------------------------------
    def register_model_version(
        self, model: str, version: s.ModelVersionCreate, idempotency_key: str | None = None
    ) -> s.ModelVersionOut:
        return self._write(f"/models/{model}/versions", version, s.ModelVersionOut, idempotency_key)

    def model(self, model: str) -> s.ModelOut:
        return self._read(f"/models/{model}", s.ModelOut)

    def check_drift(self, model: str, recent: dict[str, list[float]]) -> s.DriftOut:
        return self._write(f"/models/{model}/drift", s.DriftRequest(recent=recent), s.DriftOut, None)

    def rollback(self, model: str, version: str, reason: str = "") -> s.ModelVersionOut:
        return self._write(
            f"/models/{model}/rollback", s.RollbackRequest(version=version, reason=reason), s.ModelVersionOut, None
        )

    def model_events(self, model: str, limit: int = 50, cursor: int = 0) -> s.Page[s.ModelEventOut]:
        return self._read(f"/models/{model}/events", s.Page[s.ModelEventOut], limit=limit, cursor=cursor)

    # ---- hyperparameter governor ----------------------------------------------------------------------------
    def create_governor(self, governor: s.GovernorCreate, idempotency_key: str | None = None) -> s.GovernorOut:
        return self._write("/governors", governor, s.GovernorOut, idempotency_key)

    def governor(self, governor_id: int) -> s.GovernorOut:
        return self._read(f"/governors/{governor_id}", s.GovernorOut)

    def change_knobs(
        self, governor_id: int, values: dict[str, Any], reason: str = "", idempotency_key: str | None = None
    ) -> s.ChangeOut:
        return self._write(
            f"/governors/{governor_id}/changes",
            s.KnobChange(values=values, reason=reason),
            s.ChangeOut,
            idempotency_key,
        )

    def governor_telemetry(
        self, governor_id: int, gain: float, stability: float, resource: float, idempotency_key: str | None = None
    ) -> s.TelemetryOut:
        body = s.TelemetryCreate(gain=gain, stability=stability, resource=resource)
        return self._write(f"/governors/{governor_id}/telemetry", body, s.TelemetryOut, idempotency_key)

    def governor_events(self, governor_id: int, limit: int = 50, cursor: int = 0) -> s.Page[s.GovernorEventOut]:
        return self._read(f"/governors/{governor_id}/events", s.Page[s.GovernorEventOut], limit=limit, cursor=cursor)

    def priors(self) -> list[s.PriorOut]:
        return [s.PriorOut.model_validate(p) for p in self._request("GET", "/priors").json()]

    def set_prior(self, domain: str, prior: s.PriorCreate) -> s.PriorOut:
        payload = prior.model_dump(mode="json")
        return s.PriorOut.model_validate(
            self._request("PUT", f"/priors/{domain}", json=payload, idempotency_key=str(uuid.uuid4())).json()
        )

    def combine_priors(self, step_size: float = 1.0) -> s.CombinationOut:
        return self._write("/priors/combine", s.CombineRequest(step_size=step_size), s.CombinationOut, None)
