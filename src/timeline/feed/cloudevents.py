"""Recorded events as CloudEvents 1.0 JSON objects: the one shape every feed channel sends."""

from __future__ import annotations

import json
from typing import Any

from timeline.domain.dates import format_instant
from timeline.domain.model import Rule
from timeline.events import event_data, event_type

SPECVERSION = "1.0"
# The producer context: rules; each event's subject is one rule's id within it (as in the
# CloudEvents spec's own example of a container as source and an item as subject).
SOURCE = "/api/v1/rules"
SEQUENCE_DIGITS = 20


def event_id(event: Rule.Event) -> str:
    """A stable id: the rule and its version, the same in every store holding this history."""
    return f"{event.originator_id}:{event.originator_version}"


def sequence(position: int) -> str:
    """The position, zero-padded so that the text sorts in position order."""
    return str(position).zfill(SEQUENCE_DIGITS)


def to_cloudevent(position: int, event: Rule.Event) -> dict[str, Any]:
    return {
        "specversion": SPECVERSION,
        "id": event_id(event),
        "source": SOURCE,
        "type": event_type(event),
        "subject": event.originator_id,
        "time": format_instant(event.timestamp),
        "sequence": sequence(position),
        "datacontenttype": "application/json",
        "data": event_data(event),
    }


def dumps(cloudevent: dict[str, Any]) -> str:
    """Compact JSON on one line: SSE data lines and signed webhook bodies use exactly this."""
    return json.dumps(cloudevent, ensure_ascii=False, separators=(",", ":"))
