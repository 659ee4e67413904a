"""The import check: every line as the API's own schemas would take it."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError, validates_schema

from timeline.domain.errors import InvalidInput
from timeline.schemas import RuleSchema
from timeline.service import Tracker


class NoSecretRules(RuleSchema):
    @validates_schema
    def _no_secrets(self, data: dict[str, Any], **_: Any) -> None:
        if "secret" in data["title"] or data["tags"] == []:  # ``tags`` as loaded: its default
            raise ValidationError("no secret rules", "title")


def test_a_new_schema_level_validator_is_applied_on_import(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    """A validator added to the API's schema refuses an import line with no other change."""
    from timeline import import_check
    from timeline.events import RULE_REGISTERED

    rule = {"id": "cn-soy", "title": "Soybeans", "jurisdiction": "CN", "instrument": "other",
            "targets": [], "subjects": [], "tags": ["food"], "links": []}
    good = {"type": RULE_REGISTERED, "rule_id": "cn-soy", "version": 1,
            "recorded_at": "2025-12-09T00:00:00.000000Z", "data": rule}
    secret = {**good, "rule_id": "cn-secret", "recorded_at": "2025-12-10T00:00:00.000000Z",
              "data": {**rule, "id": "cn-secret", "title": "a secret rule"}}
    monkeypatch.setattr(import_check, "RuleSchema", NoSecretRules)
    with pytest.raises(InvalidInput, match="line 2: title: no secret rules"):
        tracker.import_records(lambda: iter([good, secret]))
    assert tracker.app.head() == 0
    assert tracker.import_records(lambda: iter([good])) == 1
