"""Whole listings read through the tracker's keyset pages, for tests to build expected answers.

``diff`` finds the changes by comparing every rule's states on the two days: a plain reference
for the diff queries, which find them in SQL.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from timeline.service import Tracker

# What a change between two days is a change of.
STATE_FIELDS = ("status", "rate_percent", "conditions")


def states(tracker: Tracker, as_of: date | None = None, known_at: datetime | None = None,
           **filters: Any) -> list[dict]:
    """Every rule's state on ``as_of`` (today, UTC, by default) as known at ``known_at``."""
    at = tracker.known_at(known_at)
    return list(tracker.iter_states(as_of or datetime.now(timezone.utc).date(), at, **filters))


def diff(tracker: Tracker, day_from: date, day_to: date, known_at: datetime | None = None,
         **filters: Any) -> tuple[str, list[dict]]:
    """The rules whose status, rate or conditions differ between two days, and the instant."""
    at = tracker.known_at(known_at)
    before = {s["rule"]["id"]: s for s in tracker.iter_states(day_from, at, **filters)}
    changes = []
    for state in tracker.iter_states(day_to, at, **filters):
        old = before.get(state["rule"]["id"])
        if old is not None and any(old[f] != state[f] for f in STATE_FIELDS):
            changes.append({"rule_id": state["rule"]["id"], "before": old, "after": state})
    return at, changes
