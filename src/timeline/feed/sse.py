"""The feed live, as Server-Sent Events: ``id:`` the position, ``event:`` the type, ``data:`` the CloudEvent.

How the stream waits for new events is pluggable: :class:`PollWaiter` looks at the store again
after a short sleep (SQLite); a waiter woken by PostgreSQL's LISTEN/NOTIFY can replace it
without touching the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from timeline.feed.cloudevents import dumps, to_cloudevent

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 0.5
BATCH = 100
RETRY_MILLISECONDS = 2000


class Waiter(Protocol):
    def wait(self, after: int, timeout: float) -> None:
        """Return once events after ``after`` may exist, or after ``timeout`` seconds at most."""


class PollWaiter:
    """Sleep a little and let the stream look again: the store is read at most every ``interval`` s."""

    def __init__(self, interval: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep):
        self.interval = interval
        self._sleep = sleep

    def wait(self, after: int, timeout: float) -> None:
        self._sleep(max(0.0, min(self.interval, timeout)))


@dataclass(frozen=True)
class StreamLimits:
    """How long a stream lasts: forever in service; tests bound it by events or seconds."""

    heartbeat: float = HEARTBEAT_SECONDS
    max_events: int | None = None
    max_seconds: float | None = None


def format_event(position: int, cloudevent: dict[str, Any]) -> str:
    return f"id: {position}\nevent: {cloudevent['type']}\ndata: {dumps(cloudevent)}\n\n"


def event_stream(
    events_after: Callable[[int, int], list[tuple[int, Any]]],
    start: int,
    waiter: Waiter,
    limits: StreamLimits = StreamLimits(),
    clock: Callable[[], float] = time.monotonic,
    keep: Callable[[Any], bool] | None = None,
) -> Iterator[str]:
    """Every event after ``start`` as it is recorded (those ``keep`` lets through, if given), with
    a comment at least every heartbeat."""
    began = last_sent = clock()
    position = start
    sent = 0
    # The first bytes go out at once, so that clients and proxies see the stream open.
    yield f"retry: {RETRY_MILLISECONDS}\n: streaming events after position {start}\n\n"
    while True:
        rows = events_after(position, BATCH)
        for row_position, event in rows:
            position = row_position
            if keep is not None and not keep(event):
                continue
            yield format_event(row_position, to_cloudevent(row_position, event))
            sent += 1
            last_sent = clock()
            if limits.max_events is not None and sent >= limits.max_events:
                return
        if len(rows) == BATCH:
            continue
        now = clock()
        if limits.max_seconds is not None and now - began >= limits.max_seconds:
            return
        if now - last_sent >= limits.heartbeat:
            yield ": heartbeat\n\n"
            last_sent = now
        timeout = limits.heartbeat - (now - last_sent)
        if limits.max_seconds is not None:
            timeout = min(timeout, limits.max_seconds - (now - began))
        waiter.wait(position, max(0.0, timeout))
