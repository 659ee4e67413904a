"""Validation messages are plain text, even where they quote a pattern with braces."""

from timeline.schemas import RuleSchema


def test_a_bad_rule_id_is_reported_with_its_pattern():
    errors = RuleSchema().validate(
        {"id": "X", "title": "t", "jurisdiction": "US", "instrument": "other"}
    )
    assert errors == {"id": ["must match ^[a-z0-9][a-z0-9-]{2,79}$"]}
