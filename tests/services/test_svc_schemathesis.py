"""Property-based requests generated from the OpenAPI schema never get a server error (small run, SQLite).

The full run against a live server on SQLite and PostgreSQL is experiments/services/reliability.py.
"""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from svc_helpers import TOKENS, auth  # noqa: E402

from metalab.services.api.app import create_app  # noqa: E402
from metalab.services.config import ServiceSettings  # noqa: E402

_STORE = Path(tempfile.mkdtemp(prefix="metalab-schemathesis-")) / "store.db"
APP = create_app(ServiceSettings(database_url=f"sqlite:///{_STORE}", tokens=dict(TOKENS)))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case):
    if "workspace" in (case.path_parameters or {}):
        case.path_parameters["workspace"] = "alpha"
    response = case.call(headers=auth())
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
