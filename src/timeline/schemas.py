"""Marshmallow schemas declared once: the API, the fixtures and the OpenAPI document use them."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import pycountry
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from timeline.domain.dates import InvalidDate, PolicyDate, parse_day, parse_instant
from timeline.domain.errors import InvalidInput
from timeline.domain.fold import STATUSES
from timeline.domain.kinds import KINDS, MAX_RATE_PERCENT, check_action_fields

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

    def __init__(self, **kwargs: Any):
        metadata = kwargs.setdefault("metadata", {})
        metadata.setdefault("pattern", r"^\d{4}(-\d{2}(-\d{2})?)?$")
        metadata.setdefault("example", "2025-12")
        super().__init__(**kwargs)

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


class Pattern(validate.Regexp):
    """A regular expression the whole value must match: ``$`` alone would also let through a
    value ending in a newline (Python's ``$`` matches before one; JSON Schema's does not)."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _code(value: str) -> None:
    if value not in JURISDICTIONS:
        raise ValidationError(f"{value!r} is not an ISO 3166-1 alpha-2 code or EU")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class LinkSchema(StrictSchema):
    rule = fields.String(required=True, validate=Pattern(RULE_ID, error="is not a rule id"))
    relation = fields.String(required=True, validate=validate.OneOf(RELATIONS))


class RuleSchema(StrictSchema):
    id = fields.String(
        required=True,
        validate=Pattern(RULE_ID, error="must match ^[a-z0-9][a-z0-9-]{{2,79}}$"),
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
_rate_percent = Number(validate=validate.Range(min=0, max=MAX_RATE_PERCENT))
_sources = fields.List(fields.Nested(SourceSchema), validate=validate.Length(min=1, max=20))


class ActionSchema(StrictSchema):
    """An action's fields and their types; the rules that tie them to the kind are in
    ``domain/kinds.py``, checked once by the rule aggregate on every write."""

    id = fields.String(validate=Pattern(ACTION_ID, error="letters, digits and . _ : - only"))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    effective = PolicyDateField(required=True)
    announced = PolicyDateField()
    rate_percent = _rate_percent
    until = PolicyDateField()
    conditions = _conditions
    summary = fields.String(validate=validate.Length(max=5000), load_default="")
    sources = fields.List(fields.Nested(SourceSchema), required=True,
                          validate=validate.Length(min=1, max=20))


class FileActionSchema(ActionSchema):
    """An action in a file (fixtures, CSV, an export to import): a whole file is checked before
    anything of it is stored, so this also checks the rules that tie fields to the kind, which
    a write leaves to the rule aggregate."""

    @validates_schema
    def _by_kind(self, data: dict[str, Any], **_: Any) -> None:
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
    rate_percent = _rate_percent
    until = PolicyDateField(allow_none=True)
    conditions = _conditions
    summary = fields.String(validate=validate.Length(max=5000))
    sources = _sources


class RetractionSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class FixtureRuleSchema(RuleSchema):
    actions = fields.List(fields.Nested(FileActionSchema), load_default=list)


class FixtureFileSchema(StrictSchema):
    rules = fields.List(fields.Nested(FixtureRuleSchema), required=True,
                        validate=validate.Length(min=1))


# Query strings ---------------------------------------------------------------------------


class DayField(fields.String):
    """A full ``YYYY-MM-DD`` day that exists, loaded as a :class:`datetime.date`."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metadata", {}).setdefault("format", "date")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> date:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_day(text)
        except InvalidDate as exc:
            raise ValidationError(str(exc)) from None


class InstantField(fields.String):
    """An RFC 3339 instant with a zone, loaded as a UTC :class:`datetime.datetime`."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metadata", {}).setdefault("format", "date-time")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_instant(text)
        except InvalidDate as exc:
            raise ValidationError(str(exc)) from None


def _as_of() -> DayField:
    return DayField(metadata={"description": "The day in the world, YYYY-MM-DD (default: today, UTC)."})


def _known_at() -> InstantField:
    return InstantField(metadata={
        "description": "What the tracker knew at this RFC 3339 instant (default: now; a later "
                       "instant is answered as of now and echoed as such).",
    })


def _jurisdiction_filter() -> fields.String:
    return fields.String(
        validate=validate.OneOf(sorted(JURISDICTIONS),
                                error="{input!r} is not an ISO 3166-1 alpha-2 code or EU"),
        metadata={"description": "Only rules issued by this code."},
    )


def _instrument_filter() -> fields.String:
    return fields.String(validate=validate.OneOf(INSTRUMENTS),
                         metadata={"description": "Only rules of this instrument."})


def _text_filter() -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=200),
                         metadata={"description": "Only rules or actions matching every word."})


class StateQuerySchema(StrictSchema):
    as_of = _as_of()
    known_at = _known_at()


class ListCursorField(fields.String):
    """A ``next_cursor`` of a paged listing; anything else is refused before the query runs."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        from timeline.cursors import BadCursor, ListCursor

        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            ListCursor.decode(text)
        except BadCursor:
            raise ValidationError("is not a cursor this server gave") from None
        return text


def _list_limit() -> fields.Integer:
    from timeline.cursors import LIST_LIMIT, LIST_MAX_LIMIT

    return fields.Integer(load_default=LIST_LIMIT, validate=validate.Range(min=1), metadata={
        "description": f"Items per page: default {LIST_LIMIT}; a larger limit than "
                       f"{LIST_MAX_LIMIT} is answered with {LIST_MAX_LIMIT}."})


def _list_cursor() -> ListCursorField:
    return ListCursorField(metadata={
        "description": "The next_cursor of the page before. It carries the first page's query "
                       "and known_at, so the pages of one listing answer one snapshot; "
                       "parameters left out take the first page's values, and any given must "
                       "be the same (400 otherwise)."})


class RulesQuerySchema(StateQuerySchema):
    jurisdiction = _jurisdiction_filter()
    instrument = _instrument_filter()
    q = _text_filter()
    limit = _list_limit()
    cursor = _list_cursor()


class HistoryQuerySchema(StrictSchema):
    known_at = _known_at()


class DiffQuerySchema(StrictSchema):
    day_from = DayField(data_key="from", required=True, metadata={"description": "The first day."})
    day_to = DayField(data_key="to", required=True, metadata={"description": "The second day."})
    known_at = _known_at()
    jurisdiction = _jurisdiction_filter()
    instrument = _instrument_filter()
    limit = _list_limit()
    cursor = _list_cursor()


TIMELINE_MAX_LIMIT = 1000


class TimelineCursorField(fields.String):
    """A ``next_cursor`` of the timeline; anything else is refused before the query runs."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        from timeline.cursors import decode_timeline_cursor

        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            decode_timeline_cursor(text)
        except InvalidInput:
            raise ValidationError("is not a cursor this server gave") from None
        return text


class TimelineQuerySchema(StrictSchema):
    day_from = PolicyDateField(data_key="from", metadata={
        "description": "Only actions whose effective period ends on or after the start of this "
                       "YYYY, YYYY-MM or YYYY-MM-DD."})
    day_to = PolicyDateField(data_key="to", metadata={
        "description": "Only actions whose effective period starts on or before the end of this "
                       "YYYY, YYYY-MM or YYYY-MM-DD."})
    jurisdiction = _jurisdiction_filter()
    instrument = _instrument_filter()
    rule = fields.String(validate=Pattern(RULE_ID, error="is not a rule id"),
                         metadata={"description": "Only this rule's actions."})
    kind = fields.String(validate=validate.OneOf(KINDS), metadata={"description": "Only this kind."})
    q = _text_filter()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1), metadata={
        "description": f"Items per page: default 100, capped at {TIMELINE_MAX_LIMIT}."})
    cursor = TimelineCursorField(metadata={"description": "The next_cursor of the previous page."})

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if "day_from" in data and "day_to" in data:
            if PolicyDate.parse(data["day_from"]).start > PolicyDate.parse(data["day_to"]).end:
                raise ValidationError("must not be after to", "from")

    @post_load
    def _cap(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["limit"] = min(data["limit"], TIMELINE_MAX_LIMIT)
        return data


class SpellsQuerySchema(StrictSchema):
    """The query of a research download (see the contract's Research data)."""

    known_at = _known_at()
    jurisdiction = _jurisdiction_filter()
    instrument = _instrument_filter()
    rule = fields.String(validate=Pattern(RULE_ID, error="is not a rule id"),
                         metadata={"description": "Only this rule."})
    q = fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "Only rules whose title or subjects, or one of whose actions' summary as "
                       "known now, match every word (a download with q can change when an "
                       "action's summary is corrected later)."})
    fmt = fields.String(data_key="format", load_default="csv",
                        validate=validate.OneOf(("csv", "jsonl")),
                        metadata={"description": "csv (default: a header line, lists as JSON "
                                                 "arrays) or jsonl (JSON Lines)."})


class PanelQuerySchema(SpellsQuerySchema):
    day_from = DayField(data_key="from", required=True,
                        metadata={"description": "The first day of the first period."})
    day_to = DayField(data_key="to", required=True,
                      metadata={"description": "The last day of the last period."})
    every = fields.String(required=True,
                          validate=validate.OneOf(("day", "week", "month", "quarter", "year")),
                          metadata={"description": "The periods: calendar days, ISO weeks (Monday "
                                                   "to Sunday), months, quarters or years."})

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if "day_from" in data and "day_to" in data and data["day_from"] > data["day_to"]:
            raise ValidationError("must not be after to", "from")


class IdempotencyHeaderSchema(Schema):
    """Headers a write reads; any others are ignored."""

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=Pattern(r"^[\x21-\x7e]{1,255}$",
                                 error="must be 1 to 255 visible ASCII characters"),
        metadata={"description": "Makes a retried write safe: a repeat with the same body answers "
                                 "the first status and body and stores nothing; with another body, 422."},
    )


# Output shapes: what the API answers, and the OpenAPI document says -----------------------


def _next_cursor() -> fields.String:
    return fields.String(required=True, allow_none=True, metadata={
        "description": "Pass as cursor for the next page; null on the last page."})


class RegisteredRuleSchema(RuleSchema):
    position = fields.Integer(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})


class StateSchema(Schema):
    rule = fields.Nested(RuleSchema, required=True)
    as_of = fields.String(required=True, metadata={"format": "date"})
    known_at = fields.String(required=True, metadata={"format": "date-time"})
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    rate_percent = fields.Float(required=True, allow_none=True)
    conditions = fields.List(fields.String(), required=True)
    since = fields.String(required=True, allow_none=True)
    until = fields.String(required=True, allow_none=True)
    certain = fields.Boolean(required=True)
    uncertain_because = fields.List(fields.String(), required=True)
    based_on = fields.List(fields.String(), required=True)
    version = fields.Integer(required=True)


class StateListSchema(Schema):
    items = fields.List(fields.Nested(StateSchema), required=True)
    next_cursor = _next_cursor()
    as_of = fields.String(required=True, metadata={"format": "date"})
    known_at = fields.String(required=True, metadata={"format": "date-time"})


class CorrectionRecordSchema(Schema):
    id = fields.String(required=True)
    reason = fields.String(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})
    position = fields.Integer(required=True)
    changes = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), required=True)
    previous = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), required=True,
                           metadata={"description": "The changed fields' values before this correction."})


class RetractionRecordSchema(Schema):
    id = fields.String(required=True)
    reason = fields.String(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})
    position = fields.Integer(required=True)


class RecordedActionSchema(ActionSchema):
    """An action as stored: the client's fields plus where and when it was recorded."""

    id = fields.String(required=True)
    rule_id = fields.String(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})
    position = fields.Integer(required=True)


class HistoryItemSchema(RecordedActionSchema):
    original = fields.Nested(ActionSchema, required=True, allow_none=True, metadata={
        "description": "The action as first recorded, when corrections changed it."})
    corrections = fields.List(fields.Nested(CorrectionRecordSchema), required=True)
    retraction = fields.Nested(RetractionRecordSchema, required=True, allow_none=True)
    retracted = fields.Boolean(required=True)


class HistorySchema(Schema):
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)
    rule_id = fields.String(required=True)
    known_at = fields.String(required=True, metadata={"format": "date-time"})


class ChangeSchema(Schema):
    rule_id = fields.String(required=True)
    before = fields.Nested(StateSchema, required=True)
    after = fields.Nested(StateSchema, required=True)


class DiffSchema(Schema):
    changes = fields.List(fields.Nested(ChangeSchema), required=True)
    next_cursor = _next_cursor()
    day_from = fields.String(data_key="from", required=True, metadata={"format": "date"})
    day_to = fields.String(data_key="to", required=True, metadata={"format": "date"})
    known_at = fields.String(required=True, metadata={"format": "date-time"})


class TimelineItemSchema(RecordedActionSchema):
    rule_title = fields.String(required=True)
    jurisdiction = fields.String(required=True)
    instrument = fields.String(required=True)
    targets = fields.List(fields.String(), required=True)
    corrected = fields.Boolean(required=True)


class TimelinePageSchema(Schema):
    items = fields.List(fields.Nested(TimelineItemSchema), required=True)
    next_cursor = _next_cursor()


class WrittenSchema(Schema):
    id = fields.String(required=True)
    position = fields.Integer(required=True)
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})


class ProblemSchema(Schema):
    """RFC 9457 problem details: every error under /api/ has this shape."""

    type = fields.String(required=True, metadata={"format": "uri-reference"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "Messages by field name (may be empty)."})


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
