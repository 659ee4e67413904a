"""Pages of the feed: every event with a position greater than ``after``, in order, at most ``limit``.

Positions only grow and may have gaps. Every write happens under the store's write lock and
commits before the next one takes a position, so once a position is visible no smaller one can
appear later: a full page is final, and a consumer that keeps asking with the last position it
saw gets every event exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timeline.domain.errors import TimelineError
from timeline.feed.cloudevents import to_cloudevent
from timeline.feed.filters import EventFilter

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Events looked at for one filtered page: a page with few matches still answers promptly, and
# its ``next_after`` moves past everything looked at, so the next page starts after them.
SCAN_LIMIT = 10_000


class BadFeedParameter(TimelineError):
    """A feed parameter that is not what the contract allows (400, not 422)."""


def parse_position(text: str | None, name: str, default: int | None = 0) -> int | None:
    """A non-negative integer position from a query parameter or header (absent: ``default``)."""
    if text is None:
        return default
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        raise BadFeedParameter(
            f"{name} must be a non-negative integer position, not {text!r}.",
            {name: "must be a non-negative integer"},
        )
    return int(value)


def parse_limit(text: str | None) -> int:
    """``limit`` defaults to 100; larger values than 1000 are served as 1000."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise BadFeedParameter(
            f"limit must be a positive integer, not {text!r}.",
            {"limit": "must be a positive integer (at most 1000 are served)"},
        )
    return min(int(value), MAX_LIMIT)


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_after: int
    head: int
    full: bool  # the page ends before the head: it never changes

    def body(self) -> dict[str, Any]:
        return {"events": self.events, "next_after": self.next_after, "head": self.head}


def read_page(tracker: Any, after: int, limit: int) -> Page:
    """One page of CloudEvents after ``after``."""
    rows = tracker.events_after(after, limit)
    events = [to_cloudevent(position, event) for position, event in rows]
    next_after = rows[-1][0] if rows else after
    # Read the head after the events, so that it is never behind the page it comes with.
    head = max(tracker.head(), next_after if rows else 0)
    return Page(events, next_after, head, full=len(rows) == limit)


def read_filtered_page(tracker: Any, after: int, limit: int, wanted: EventFilter,
                       scan_limit: int | None = None) -> Page:
    """One page of the events after ``after`` that match ``wanted``.

    ``next_after`` is the last position looked at, matching or not, so a consumer paging on
    it gets every matching event exactly once even where they are sparse.
    """
    if wanted.everything:
        return read_page(tracker, after, limit)
    facets = tracker.rule_facets if wanted.needs_facets else None
    scan_limit = scan_limit or SCAN_LIMIT
    events: list[dict[str, Any]] = []
    scanned, position, ended = 0, after, False
    while len(events) < limit and scanned < scan_limit:
        batch = min(MAX_LIMIT, scan_limit - scanned)
        rows = tracker.events_after(position, batch)
        for found, event in wanted.select(rows, facets):
            events.append(to_cloudevent(found, event))
            if len(events) == limit:
                position = found  # stop at the last match: the events after it come next
                break
        else:
            if rows:
                position = rows[-1][0]
        scanned += len(rows)
        if len(rows) < batch:
            ended = len(events) < limit  # looked at everything stored
            break
    head = max(tracker.head(), position)
    return Page(events, position, head, full=not ended)
