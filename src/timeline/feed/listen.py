"""Waking event streams on PostgreSQL: LISTEN on the channel the event store NOTIFYs on commit.

One listening connection per process serves every open stream; a stream sleeps until a commit
is announced (or its timeout), instead of polling the store.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("timeline.feed")

# Each open tracker's waiter, until the tracker closes (a waiter holds its tracker).
_waiters: dict[Any, NotifyWaiter] = {}
_lock = threading.Lock()


class NotifyWaiter:
    """A :class:`~timeline.feed.sse.Waiter` woken by PostgreSQL's NOTIFY."""

    RECONNECT_SECONDS = 1.0

    def __init__(self, tracker: Any):
        self._head = tracker.head
        self._conninfo = tracker.settings.postgres_conninfo()
        self._channel = tracker.notification_channel()
        self._changed = threading.Condition()
        self._generation = 0
        self.listening = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="timeline-listen", daemon=True)
        self._thread.start()
        tracker.on_close(self.stop)

    def stop(self) -> None:
        """Close the listening connection (the tracker is closing)."""
        self._stopped.set()
        self._thread.join(10)

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        while not self._stopped.is_set():
            try:
                with psycopg.connect(autocommit=True, **self._conninfo) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    self._wake()  # anything committed while (re)connecting
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except Exception as exc:  # a dropped connection: streams fall back to timeouts
                self.listening.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                self._wake()
                self._stopped.wait(self.RECONNECT_SECONDS)
        self.listening.clear()
        self._wake()

    def _wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait(self, after: int, timeout: float) -> None:
        with self._changed:
            generation = self._generation
        # A commit between the stream's last read and now: no need to wait for its NOTIFY.
        if self._head() > after:
            return
        with self._changed:
            self._changed.wait_for(lambda: self._generation != generation, timeout=max(0.0, timeout))


def notify_waiter(tracker: Any) -> NotifyWaiter:
    """The process's waiter for this tracker's store, started on first use."""
    with _lock:
        waiter = _waiters.get(tracker)
        if waiter is None:
            waiter = _waiters[tracker] = NotifyWaiter(tracker)
            tracker.on_close(lambda: _forget(tracker))
        return waiter


def _forget(tracker: Any) -> None:
    with _lock:
        _waiters.pop(tracker, None)
