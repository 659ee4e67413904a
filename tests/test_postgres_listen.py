"""On PostgreSQL, event streams wake on the store's NOTIFY instead of polling."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.pg import postgres_settings
from timeline.feed.listen import notify_waiter
from timeline.service import Tracker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # a server round trip each: whole suite only

RULE = {"id": "listen-rule", "title": "Listen", "jurisdiction": "US", "instrument": "other",
        "targets": [], "subjects": [], "tags": [], "links": []}


@pytest.fixture
def pg_tracker(tmp_path: Path):
    for settings in postgres_settings(tmp_path / "home"):
        tracker = Tracker(settings)
        yield tracker
        tracker.close()


def test_a_commit_wakes_the_waiter_through_notify(pg_tracker: Tracker) -> None:
    waiter = notify_waiter(pg_tracker)
    assert waiter.listening.wait(20), "the LISTEN connection should be up"
    assert notify_waiter(pg_tracker) is waiter  # one listening connection per store and process
    with waiter._changed:
        before = waiter._generation

    # Another writer (a thread with its own tracker) commits an event.
    other = Tracker(pg_tracker.settings)
    writer = threading.Thread(target=other.register_rule, args=(RULE,))
    writer.start()

    with waiter._changed:
        woke = waiter._changed.wait_for(lambda: waiter._generation != before, timeout=30)
    writer.join()
    other.close()
    assert woke, "the commit's NOTIFY should wake the waiter"
    assert waiter.listening.is_set()


def test_the_stream_on_postgresql_delivers_an_event_recorded_after_it_opened(pg_tracker: Tracker) -> None:
    from timeline.web import create_app

    app = create_app({"TESTING": True, "TIMELINE_SSE_MAX_EVENTS": 1, "TIMELINE_SSE_MAX_SECONDS": 60},
                     tracker=pg_tracker)
    client = app.test_client()
    response = client.get("/api/v1/events/stream", buffered=False)
    chunks = response.response
    first = next(chunks)  # the stream is open, at the head
    assert b"streaming events after position 0" in first
    pg_tracker.register_rule(RULE)
    body = b"".join(chunks)
    assert b"event: timeline.rule.registered" in body
    assert b'"subject":"listen-rule"' in body


def test_a_closed_tracker_leaves_no_waiter_holding_it(tmp_path: Path) -> None:
    """A process that opens and closes trackers (a test run, a command run in a loop) keeps
    neither their listening connections nor their stores."""
    import gc
    import weakref

    for settings in postgres_settings(tmp_path / "home"):
        tracker = Tracker(settings)
        waiter = notify_waiter(tracker)
        assert waiter.listening.wait(20)
        tracker.close()
        assert not waiter._thread.is_alive()
        gone = weakref.ref(tracker)
        del tracker, waiter
        gc.collect()
        assert gone() is None
