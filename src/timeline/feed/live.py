"""Live subscribers of one server process: new events are read once and shared by every stream.

A :class:`Broadcaster` thread waits for new events (a short poll on SQLite, LISTEN/NOTIFY on
PostgreSQL, the same :class:`~timeline.feed.sse.Waiter` as a single stream), reads them once,
formats each as a Server-Sent Event, and appends it to a shared window of recent events. Each
subscriber is a coroutine on the server's event loop that follows the window from its own
position: N subscribers cost one read per event, not N, and no thread each. A subscriber
further back than the window (resuming from an old ``Last-Event-ID``) reads the store in a
worker thread until it reaches the window, so resuming stays gap-free.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from timeline.events import event_type
from timeline.feed.cloudevents import to_cloudevent
from timeline.feed.filters import EventFilter, RuleFacets, UnknownRule
from timeline.feed.sse import BATCH, RETRY_MILLISECONDS, StreamLimits, Waiter, format_event

log = logging.getLogger("timeline.feed")

# Events kept in memory for subscribers that are a little behind; older ones are read again.
WINDOW = 1000


class AtCapacity(Exception):
    """This process already holds as many subscribers as it may."""


@dataclass(frozen=True)
class LiveEvent:
    position: int
    rule_id: str
    type: str
    chunk: bytes


class Broadcaster:
    """The one reader of new events in this process, and the count of its subscribers."""

    def __init__(self, tracker: Any, waiter: Waiter, capacity: int, window: int = WINDOW):
        self._tracker = tracker
        self._waiter = waiter
        self.capacity = capacity
        self._window = window
        self.facets = RuleFacets(tracker)
        self.subscribers = 0
        self._positions: list[int] = []
        self._events: list[LiveEvent] = []
        self._floor = 0  # the window holds every event after this position
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future | None = None
        self._closed = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # The reading thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading, on the running event loop's behalf (the first subscriber does this)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._changed = self._loop.create_future()
        self._floor = self._tracker.head()
        self._thread = threading.Thread(target=self._read, args=(self._floor,),
                                        name="timeline-broadcast", daemon=True)
        self._thread.start()

    def _read(self, position: int) -> None:
        while not self._stopped.is_set():
            try:
                rows = self._tracker.events_after(position, BATCH)
                events = [self._live(p, event) for p, event in rows]
            except Exception:  # the store is unreachable for now: streams wait, then go on
                log.exception("reading new events for live subscribers failed; retrying")
                self._stopped.wait(1.0)
                continue
            if events:
                position = events[-1].position
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._publish, events)
                except RuntimeError:  # the loop has closed: the server is gone
                    return
                if len(rows) == BATCH:
                    continue
            self._waiter.wait(position, 1.0)

    @staticmethod
    def _live(position: int, event: Any) -> LiveEvent:
        chunk = format_event(position, to_cloudevent(position, event)).encode()
        return LiveEvent(position, event.originator_id, event_type(event), chunk)

    def _publish(self, events: list[LiveEvent]) -> None:
        self._positions.extend(e.position for e in events)
        self._events.extend(events)
        if len(self._events) > 2 * self._window:
            drop = len(self._events) - self._window
            self._floor = self._positions[drop - 1]
            del self._positions[:drop], self._events[:drop]
        self._wake()

    def _wake(self) -> None:
        assert self._loop is not None and self._changed is not None
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)

    def close(self) -> None:
        """End every stream (the server is stopping) and the reading thread."""
        self._closed = True
        self._stopped.set()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    # Subscribers -------------------------------------------------------------------------------

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one subscriber's place while the stream lasts; :class:`AtCapacity` past the maximum."""
        if self.subscribers >= self.capacity:
            raise AtCapacity
        self.subscribers += 1
        try:
            yield
        finally:
            self.subscribers -= 1

    def _stored_after(self, position: int) -> list[LiveEvent]:
        return [self._live(p, event) for p, event in self._tracker.events_after(position, BATCH)]

    async def _passes(self, wanted: EventFilter, event: LiveEvent) -> bool:
        facets: tuple[str, str] | None = None
        if wanted.needs_facets:
            # Looked up once per rule and process, by the subscribers that filter on them.
            facets = self.facets.known(event.rule_id) or await asyncio.to_thread(
                self.facets.of, event.rule_id)
        try:
            return wanted.matches(event.type, event.rule_id, facets)
        except UnknownRule:
            return False

    async def events(self, start: int, wanted: EventFilter,
                     limits: StreamLimits = StreamLimits()) -> AsyncIterator[bytes]:
        """Every event after ``start`` that ``wanted`` lets through, with heartbeats, as SSE bytes."""
        self.start()
        loop = asyncio.get_running_loop()
        began = last_sent = loop.time()
        position, sent = start, 0
        yield f"retry: {RETRY_MILLISECONDS}\n: streaming events after position {start}\n\n".encode()
        while not self._closed:
            if position < self._floor:
                batch = await asyncio.to_thread(self._stored_after, position)
                if not batch:
                    position = self._floor
            else:
                first = bisect.bisect_right(self._positions, position)
                batch = self._events[first:first + BATCH]
            # What one wake brings goes out in one write: a subscriber costs one send per wake,
            # however many events arrived since the last.
            chunks: list[bytes] = []
            for event in batch:
                position = event.position
                if not wanted.everything and not await self._passes(wanted, event):
                    continue
                chunks.append(event.chunk)
                if limits.max_events is not None and sent + len(chunks) >= limits.max_events:
                    break
            if chunks:
                yield b"".join(chunks)
                sent += len(chunks)
                last_sent = loop.time()
                if limits.max_events is not None and sent >= limits.max_events:
                    return
            if batch:
                continue
            now = loop.time()
            if limits.max_seconds is not None and now - began >= limits.max_seconds:
                return
            if now - last_sent >= limits.heartbeat:
                yield b": heartbeat\n\n"
                last_sent = now
            timeout = limits.heartbeat - (now - last_sent)
            if limits.max_seconds is not None:
                timeout = min(timeout, limits.max_seconds - (now - began))
            assert self._changed is not None
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), max(0.0, timeout))
            except TimeoutError:
                pass
