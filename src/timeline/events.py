"""The public shape of stored events: stable names and fields, never the library's topics.

The feed, ``timeline export`` and ``timeline import`` all speak this shape, so that an export
from one store restores into another, and integrators see the same events the store holds.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from timeline.domain.dates import format_instant, parse_instant
from timeline.domain.model import Rule

RULE_REGISTERED = "timeline.rule.registered"
ACTION_RECORDED = "timeline.action.recorded"
ACTION_CORRECTED = "timeline.action.corrected"
ACTION_RETRACTED = "timeline.action.retracted"
EVENT_TYPES = (RULE_REGISTERED, ACTION_RECORDED, ACTION_CORRECTED, ACTION_RETRACTED)


# Each event class's public type: every kind of action is recorded as one type.
_TYPE_OF_CLASS: dict[type, str] = {
    Rule.Registered: RULE_REGISTERED,
    **{cls: ACTION_RECORDED for cls in Rule.EVENT_BY_KIND.values()},
    Rule.ActionCorrected: ACTION_CORRECTED,
    Rule.ActionRetracted: ACTION_RETRACTED,
}


def event_type(event: Rule.Event) -> str:
    try:
        return _TYPE_OF_CLASS[type(event)]
    except KeyError:
        raise TypeError(f"not a timeline event: {type(event).__name__}") from None


def event_data(event: Rule.Event) -> dict[str, Any]:
    """The event's public payload."""
    if isinstance(event, Rule.Registered):
        return {
            "id": event.originator_id,
            "title": event.title,
            "jurisdiction": event.jurisdiction,
            "instrument": event.instrument,
            "targets": list(event.targets),
            "subjects": list(event.subjects),
            "tags": list(event.tags),
            "links": [dict(link) for link in event.links],
        }
    if isinstance(event, Rule.ActionRecorded):
        return dict(event.action)
    if isinstance(event, Rule.ActionCorrected):
        return {
            "id": event.correction_id,
            "action_id": event.action_id,
            "reason": event.reason,
            "changes": dict(event.changes),
        }
    if isinstance(event, Rule.ActionRetracted):
        return {"id": event.retraction_id, "action_id": event.action_id, "reason": event.reason}
    raise TypeError(f"not a timeline event: {type(event).__name__}")


def to_record(event: Rule.Event) -> dict[str, Any]:
    """One line of ``timeline export``."""
    record: dict[str, Any] = {
        "type": event_type(event),
        "rule_id": event.originator_id,
        "version": event.originator_version,
        "recorded_at": format_instant(event.timestamp),
        "data": event_data(event),
    }
    if event.request:
        record["request"] = dict(event.request)
    return record


def from_record(record: dict[str, Any]) -> Rule.Event:
    """The stored event a line of ``timeline export`` stands for (shape checked by the caller)."""
    common = {
        "originator_id": record["rule_id"],
        "originator_version": record["version"],
        "timestamp": parse_instant(record["recorded_at"]),
        "request": record.get("request"),
    }
    data = record["data"]
    kind = record["type"]
    if kind == RULE_REGISTERED:
        fields = {k: v for k, v in data.items() if k != "id"}
        return Rule.Registered(originator_topic=get_topic(Rule), **common, **fields)
    if kind == ACTION_RECORDED:
        return Rule.EVENT_BY_KIND[data["kind"]](action=dict(data), **common)
    if kind == ACTION_CORRECTED:
        return Rule.ActionCorrected(
            correction_id=data["id"],
            action_id=data["action_id"],
            reason=data["reason"],
            changes=dict(data["changes"]),
            **common,
        )
    if kind == ACTION_RETRACTED:
        return Rule.ActionRetracted(
            retraction_id=data["id"], action_id=data["action_id"], reason=data["reason"], **common
        )
    raise ValueError(f"unknown event type {kind!r}")
