"""Schemathesis with every check on the expert registry and consensus routes (issue 35.3), on SQLite.

Every status a generated request gets must be documented, every response must match its schema, invalid
requests must be refused and valid ones accepted (``call_and_validate`` runs all of schemathesis's checks,
not only "no server error"). Two settings say what the API means. A 422 for a request the schema allows is
accepted: a round's body has rules between fields that JSON Schema cannot state (``x-cross-field-rule``: one
proposal per expert, no critique of one's own proposal); a team nobody can cover is a 409 and an unregistered
expert a 404, which schemathesis accepts anyway. And the Allow header of a 405 is not checked, because
Starlette answers a method missing on a path from the first route that matches the path (a framework-wide
behaviour of every route with GET and POST on one path).
"""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from svc_helpers import TOKENS  # noqa: E402

from metalab.services.api.app import create_app  # noqa: E402
from metalab.services.config import ServiceSettings  # noqa: E402

_STORE = Path(tempfile.mkdtemp(prefix="metalab-schemathesis-experts-")) / "store.db"
APP = create_app(ServiceSettings(database_url=f"sqlite:///{_STORE}", tokens=dict(TOKENS)))
CONFIG = SchemathesisConfig.from_dict(
    {
        "parameters": {"path.workspace": "alpha"},
        "auth": {"openapi": {"HTTPBearer": {"bearer": TOKENS["alpha"]}}},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]},
            "allow_header_conformance": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG).include(
    path_regex="/(experts|teams|consensus)"
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_expert_routes_conform_to_their_schema(case):
    case.call_and_validate()
