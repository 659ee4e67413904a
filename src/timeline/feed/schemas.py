"""The feed's public shapes, declared once for validation and the OpenAPI document."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from timeline.events import ACTION_CORRECTED, ACTION_RECORDED, ACTION_RETRACTED, EVENT_TYPES, RULE_REGISTERED
from timeline.schemas import (
    INSTRUMENTS, JURISDICTIONS, RULE_ID, ActionSchema, CorrectionSchema, Pattern, RuleSchema,
    StrictSchema,
)


class RuleRegisteredData(RuleSchema):
    """``data`` of ``timeline.rule.registered``: the rule's fields."""


class ActionRecordedData(ActionSchema):
    """``data`` of ``timeline.action.recorded``: the action's fields, with its id."""

    id = fields.String(required=True)


class CorrectionChanges(CorrectionSchema):
    class Meta:
        exclude = ("reason",)


class ActionCorrectedData(Schema):
    """``data`` of ``timeline.action.corrected``."""

    id = fields.String(required=True, metadata={"description": "The correction's id."})
    action_id = fields.String(required=True, metadata={"description": "The corrected action."})
    reason = fields.String(required=True)
    changes = fields.Nested(CorrectionChanges, required=True,
                            metadata={"description": "The fields replaced, with their new values."})


class ActionRetractedData(Schema):
    """``data`` of ``timeline.action.retracted``."""

    id = fields.String(required=True, metadata={"description": "The retraction's id."})
    action_id = fields.String(required=True, metadata={"description": "The withdrawn action."})
    reason = fields.String(required=True)


DATA_SCHEMAS = {
    RULE_REGISTERED: ("RuleRegisteredData", RuleRegisteredData),
    ACTION_RECORDED: ("ActionRecordedData", ActionRecordedData),
    ACTION_CORRECTED: ("ActionCorrectedData", ActionCorrectedData),
    ACTION_RETRACTED: ("ActionRetractedData", ActionRetractedData),
}


class CloudEventSchema(Schema):
    """One recorded event as a CloudEvents 1.0 JSON object."""

    specversion = fields.String(required=True, metadata={"example": "1.0"})
    id = fields.String(required=True, metadata={
        "description": "Stable: the rule id and the rule's version, e.g. `us-h200-export-licensing-cn:3`.",
    })
    source = fields.String(required=True, metadata={"example": "/api/v1/rules"})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    subject = fields.String(required=True, metadata={"description": "The rule id."})
    time = fields.String(required=True, metadata={
        "format": "date-time", "description": "Record time (RFC 3339, UTC, microseconds).",
    })
    sequence = fields.String(required=True, metadata={
        "description": "The event's position in the feed, zero-padded to 20 digits.",
        "example": "00000000000000000042",
    })
    datacontenttype = fields.String(required=True, metadata={"example": "application/json"})
    data = fields.Dict(required=True, metadata={
        "description": "Depends on `type`: " + ", ".join(
            f"`{t}` → {name}" for t, (name, _) in DATA_SCHEMAS.items()
        ) + ".",
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name, _ in DATA_SCHEMAS.values()],
    })


class EventPageSchema(Schema):
    events = fields.List(fields.Nested(CloudEventSchema), required=True, metadata={
        "description": "Events with positions greater than `after`, in position order.",
    })
    next_after = fields.Integer(required=True, metadata={
        "description": "Ask with this as `after` for the next page (the last position here, "
                       "or `after` itself when the page is empty).",
    })
    head = fields.Integer(required=True, metadata={
        "description": "The newest position when the page was served. A full page is cached "
                       "for long, so its `head` may be older than the feed's.",
    })


def _not_empty(values: list[str]) -> None:
    if not values:
        raise ValidationError("give at least one value, or leave the filter out for every event")


def _code(value: str) -> None:
    if value not in JURISDICTIONS:
        raise ValidationError(f"{value!r} is not an ISO 3166-1 alpha-2 code or EU")


class WebhookCreateSchema(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata={
        "description": "An http(s) URL on a public address.",
    })
    types = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), validate=_not_empty,
                        metadata={"description": "Event types to send; every type when left out."})
    rules = fields.List(fields.String(validate=Pattern(RULE_ID, error="is not a rule id")),
                        validate=_not_empty,
                        metadata={"description": "Only events of these rules (the CloudEvent's `subject`)."})
    jurisdictions = fields.List(fields.String(validate=_code), validate=_not_empty, metadata={
        "description": "Only events of rules issued by these codes (ISO 3166-1 alpha-2 or EU).",
    })
    instruments = fields.List(fields.String(validate=validate.OneOf(INSTRUMENTS)),
                              validate=_not_empty,
                              metadata={"description": "Only events of rules of these instruments."})


class WebhookCreatedSchema(Schema):
    id = fields.String(required=True)
    secret = fields.String(required=True, metadata={
        "description": "The `whsec_` signing secret for the Standard Webhooks signature; shown only here.",
    })
    url = fields.String()
    types = fields.List(fields.String())
    rules = fields.List(fields.String())
    jurisdictions = fields.List(fields.String())
    instruments = fields.List(fields.String())
    created_at = fields.String(metadata={"format": "date-time"})
    after = fields.Integer(metadata={"description": "Events with positions after this are sent."})


class PendingDeliverySchema(Schema):
    count = fields.Integer(metadata={"description": "Events still to be delivered or given up on."})
    position = fields.Integer(metadata={"description": "The oldest of them."})
    attempts = fields.Integer(metadata={"description": "Failed tries of the oldest so far."})
    next_try_at = fields.String(metadata={"format": "date-time"})


class LastAttemptSchema(Schema):
    at = fields.String(metadata={"format": "date-time"})
    status = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)


class WebhookSchema(Schema):
    id = fields.String()
    url = fields.String()
    types = fields.List(fields.String())
    rules = fields.List(fields.String())
    jurisdictions = fields.List(fields.String())
    instruments = fields.List(fields.String())
    created_at = fields.String(metadata={"format": "date-time"})
    active = fields.Boolean(metadata={
        "description": "False once disabled: after a 410 Gone, or when every try has failed for 5 days.",
    })
    disabled_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    disabled_reason = fields.String(allow_none=True)
    failing_since = fields.String(allow_none=True, metadata={
        "format": "date-time", "description": "The first failed try since the last delivery.",
    })
    after = fields.Integer()
    delivered_through = fields.Integer(metadata={
        "description": "Every event up to this position is delivered or listed as failed.",
    })
    delivered = fields.Integer()
    failed = fields.Integer()
    pending = fields.Nested(PendingDeliverySchema, allow_none=True)
    replaying = fields.Boolean(metadata={"description": "A replay is handing events out again."})
    last_attempt = fields.Nested(LastAttemptSchema, allow_none=True)


class WebhookListSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema))


class DeliverySchema(Schema):
    event_id = fields.String(metadata={"description": "The CloudEvent's `id`."})
    sequence = fields.String(metadata={
        "description": "The event's position, as in the CloudEvent (zero-padded to 20 digits).",
        "example": "00000000000000000042",
    })
    webhook_id = fields.String(metadata={
        "description": "The `webhook-id` header sent: the same on every try of the event.",
    })
    attempt = fields.Integer(metadata={"description": "1 for the first try of the event."})
    status = fields.Integer(allow_none=True, metadata={"description": "The HTTP status answered."})
    error = fields.String(allow_none=True, metadata={
        "description": "Why the try failed (a status, a timeout, a refused address); null if it did not.",
    })
    at = fields.String(metadata={"format": "date-time"})
    next_try_at = fields.String(allow_none=True, metadata={
        "format": "date-time", "description": "When the event is tried again; null when it is not.",
    })


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))


class DeliveryQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1), metadata={
        "description": "At most this many tries (default 50; the newest 200 of each endpoint "
                       "are kept, so larger values are served as 200).",
    })


class ReplaySchema(StrictSchema):
    after = fields.Integer(required=True, strict=True,
                           validate=validate.Range(min=0, max=2**63 - 1), metadata={
        "description": "Every matching event with a position greater than this is sent again.",
    })


class ReplayAcceptedSchema(Schema):
    id = fields.String()
    after = fields.Integer()
