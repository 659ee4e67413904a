"""Property-based requests generated from the app's own OpenAPI document (schemathesis).

Every operation, with valid and invalid inputs, must answer without a 5xx, with a status and
content type the document lists, and a body that matches the documented schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from timeline.config import Settings
from timeline.service import Tracker


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory):
    """An app over the bundled fixtures, and a write token for it."""
    from timeline.fixtures import bundled_fixtures, load_fixtures
    from timeline.tokens import TokenStore
    from timeline.web import create_app

    settings_ = Settings(home=tmp_path_factory.mktemp("schemathesis"))
    tracker = Tracker(settings_)
    load_fixtures(tracker, bundled_fixtures())
    app = create_app({"TESTING": True}, tracker=tracker)
    yield app, TokenStore(settings_).create("schemathesis")
    tracker.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    app, _ = fuzzed
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, fuzzed):
    _, token = fuzzed
    # Left out: "schema-valid data is accepted". Validity here also depends on other fields
    # (rate_percent only on a fee, until after effective), on the calendar (no 30 February),
    # and on what is stored (links name registered rules, cursors this server gave), which an
    # OpenAPI 3.0 document cannot say. The tests in test_api_writes.py cover those rules.
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
