"""Marshmallow schemas declared once: the API, the fixtures and the OpenAPI document use them."""

from __future__ import annotations

import re
from typing import Any

import pycountry
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from timeline.domain.dates import InvalidDate, PolicyDate
from timeline.domain.fold import KINDS, STATUSES

INSTRUMENTS = (
    "export_control", "import_tariff", "purchase_restriction", "investment_restriction",
    "sanction", "legislation", "trade_commitment", "other",
)
RELATIONS = ("amends", "blocks", "retaliates_against", "replaces", "related")
JURISDICTIONS = frozenset({c.alpha_2 for c in pycountry.countries} | {"EU"})
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,79}$")
ACTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class PolicyDateField(fields.String):
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``, kept as written."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            PolicyDate.parse(text)
        except InvalidDate as exc:
            raise ValidationError(str(exc)) from None
        return text


class Number(fields.Float):
    """A JSON number: no strings, no booleans, no NaN."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("must be a number")
        return super()._deserialize(value, attr, data, **kwargs)


def _code(value: str) -> None:
    if value not in JURISDICTIONS:
        raise ValidationError(f"{value!r} is not an ISO 3166-1 alpha-2 code or EU")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class LinkSchema(StrictSchema):
    rule = fields.String(required=True, validate=validate.Regexp(RULE_ID, error="is not a rule id"))
    relation = fields.String(required=True, validate=validate.OneOf(RELATIONS))


class RuleSchema(StrictSchema):
    id = fields.String(
        required=True,
        validate=validate.Regexp(RULE_ID, error="must match ^[a-z0-9][a-z0-9-]{{2,79}}$"),
    )
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    jurisdiction = fields.String(required=True, validate=_code)
    instrument = fields.String(required=True, validate=validate.OneOf(INSTRUMENTS))
    targets = fields.List(fields.String(validate=_code), load_default=list)
    subjects = fields.List(fields.String(validate=validate.Length(min=1, max=300)), load_default=list)
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=100)), load_default=list)
    links = fields.List(fields.Nested(LinkSchema), load_default=list)


class SourceSchema(StrictSchema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    url = fields.Url(schemes={"http", "https"})
    publisher = fields.String(validate=validate.Length(max=300))
    published = PolicyDateField()
    quote = fields.String(validate=validate.Length(max=5000))


_conditions = fields.List(
    fields.String(validate=validate.Length(min=1, max=500)), validate=validate.Length(max=50)
)
_sources = fields.List(fields.Nested(SourceSchema), validate=validate.Length(min=1, max=20))


class ActionSchema(StrictSchema):
    id = fields.String(validate=validate.Regexp(ACTION_ID, error="letters, digits and . _ : - only"))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    effective = PolicyDateField(required=True)
    announced = PolicyDateField()
    rate_percent = Number(validate=validate.Range(min=0, max=1000))
    until = PolicyDateField()
    conditions = _conditions
    summary = fields.String(validate=validate.Length(max=5000), load_default="")
    sources = fields.List(fields.Nested(SourceSchema), required=True,
                          validate=validate.Length(min=1, max=20))

    @validates_schema
    def _by_kind(self, data: dict[str, Any], **_: Any) -> None:
        from timeline.domain.errors import InvalidInput
        from timeline.domain.model import check_action_fields

        if "kind" not in data or "effective" not in data:
            return
        try:
            check_action_fields(data)
        except InvalidInput as exc:
            raise ValidationError(exc.errors) from None


class CorrectionSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=5000))
    effective = PolicyDateField()
    announced = PolicyDateField(allow_none=True)
    rate_percent = Number(validate=validate.Range(min=0, max=1000))
    until = PolicyDateField(allow_none=True)
    conditions = _conditions
    summary = fields.String(validate=validate.Length(max=5000))
    sources = _sources


class RetractionSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class FixtureRuleSchema(RuleSchema):
    actions = fields.List(fields.Nested(ActionSchema), load_default=list)


class FixtureFileSchema(StrictSchema):
    rules = fields.List(fields.Nested(FixtureRuleSchema), required=True,
                        validate=validate.Length(min=1))


# Output shapes, for the OpenAPI document ---------------------------------------------------


class StateSchema(Schema):
    rule = fields.Nested(RuleSchema)
    as_of = fields.String(metadata={"format": "date"})
    known_at = fields.String(metadata={"format": "date-time"})
    status = fields.String(validate=validate.OneOf(STATUSES))
    rate_percent = fields.Float(allow_none=True)
    conditions = fields.List(fields.String())
    since = fields.String(allow_none=True)
    until = fields.String(allow_none=True)
    certain = fields.Boolean()
    uncertain_because = fields.List(fields.String())
    based_on = fields.List(fields.String())
    version = fields.Integer()


def errors_by_field(messages: Any, prefix: str = "") -> dict[str, str]:
    """Flatten marshmallow's nested messages to ``{"sources.0.title": "..."}``."""
    flat: dict[str, str] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "_schema"
            flat.update(errors_by_field(value, name))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_schema"] = " ".join(messages)
    elif isinstance(messages, list):
        for item in messages:
            flat.update(errors_by_field(item, prefix))
    else:
        flat[prefix or "_schema"] = str(messages)
    return flat
