"""GET /api/v1/events: CloudEvents in position order, resumable, cacheable, exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from timeline.feed.paging import read_page
from timeline.service import Tracker

from feed_support import bulk_import, make_app, record, register

CE_ATTRIBUTES = {"specversion", "id", "source", "type", "subject", "time", "sequence",
                 "datacontenttype", "data"}


def all_events(client, after: int = 0, limit: int = 1000) -> list[dict]:
    """Page through the feed as a consumer does."""
    seen: list[dict] = []
    while True:
        body = client.get(f"/api/v1/events?after={after}&limit={limit}").get_json()
        seen.extend(body["events"])
        if body["next_after"] == after:
            return seen
        after = body["next_after"]


def test_every_kind_of_event_is_a_cloudevent_with_public_data(tracker, client):
    register(tracker, "us-chip-rule")
    action = tracker.record_action("us-chip-rule", {
        "id": "ban-1", "kind": "ban", "effective": "2025-10", "summary": "Banned.", "sources": [{"title": "A"}],
    })
    tracker.correct_action("us-chip-rule", "ban-1", {"effective": "2025-11"}, "date was wrong")
    tracker.retract_action("us-chip-rule", "ban-1", "recorded in error")

    events = client.get("/api/v1/events").get_json()["events"]

    assert [e["type"] for e in events] == [
        "timeline.rule.registered", "timeline.action.recorded",
        "timeline.action.corrected", "timeline.action.retracted",
    ]
    for number, event in enumerate(events, start=1):
        assert set(event) == CE_ATTRIBUTES
        assert event["specversion"] == "1.0"
        assert event["subject"] == "us-chip-rule"
        assert event["id"] == f"us-chip-rule:{number}"
        assert event["datacontenttype"] == "application/json"
        assert len(event["sequence"]) == 20 and event["sequence"].isdigit()
        assert event["time"].endswith("Z")
    assert int(events[1]["sequence"]) == action.position
    assert events[0]["data"]["title"] == "Rule us-chip-rule"
    assert events[1]["data"] == {"id": "ban-1", "kind": "ban", "effective": "2025-10",
                                 "summary": "Banned.", "sources": [{"title": "A"}]}
    assert events[2]["data"]["changes"] == {"effective": "2025-11"}
    assert events[2]["data"]["action_id"] == "ban-1"
    assert events[3]["data"] == {"id": events[3]["data"]["id"], "action_id": "ban-1",
                                 "reason": "recorded in error"}
    # Nothing of the storage library leaks out.
    text = str(events)
    assert "timeline.domain" not in text and "originator" not in text


def test_the_same_event_keeps_its_id_and_time(loaded, client):
    first = client.get("/api/v1/events?limit=5").get_json()["events"]
    record(loaded, "us-safe-chips-bill", 1)
    again = client.get("/api/v1/events?limit=5").get_json()["events"]
    assert first == again


def test_pages_resume_after_any_position(loaded, client):
    head = loaded.head()
    everything = client.get("/api/v1/events?limit=1000").get_json()
    assert [int(e["sequence"]) for e in everything["events"]] == list(range(1, head + 1))

    middle = head // 2
    resumed = client.get(f"/api/v1/events?after={middle}").get_json()
    assert resumed["events"] == everything["events"][middle:]
    assert resumed["next_after"] == head and resumed["head"] == head

    at_head = client.get(f"/api/v1/events?after={head}").get_json()
    assert at_head == {"events": [], "next_after": head, "head": head}

    past = client.get(f"/api/v1/events?after={head + 50}").get_json()
    assert past == {"events": [], "next_after": head + 50, "head": head}
    # A consumer waiting past the head gets what is recorded beyond its position, and only that.
    record(loaded, "us-safe-chips-bill", 51)
    later = client.get(f"/api/v1/events?after={head + 50}").get_json()
    assert [int(e["sequence"]) for e in later["events"]] == [head + 51]


def test_paging_in_small_steps_gives_every_event_once_in_order(loaded, client):
    small = all_events(client, limit=7)
    assert [int(e["sequence"]) for e in small] == list(range(1, loaded.head() + 1))
    assert small == client.get("/api/v1/events?limit=1000").get_json()["events"]


def test_limit_defaults_to_100_and_is_capped_at_1000(tracker, client):
    assert bulk_import(tracker, rules=77, actions_per_rule=12) == 1001
    assert len(client.get("/api/v1/events").get_json()["events"]) == 100
    body = client.get("/api/v1/events?limit=5000").get_json()
    assert len(body["events"]) == 1000 and body["next_after"] == 1000
    assert len(client.get("/api/v1/events?after=1000&limit=1000").get_json()["events"]) == 1


@pytest.mark.parametrize("query, field", [
    ("after=-1", "after"), ("after=abc", "after"), ("after=1.5", "after"), ("after=%20", "after"),
    ("after=1e3", "after"), ("limit=0", "limit"), ("limit=-5", "limit"), ("limit=ten", "limit"),
])
def test_bad_positions_and_limits_are_400_problems(client, query, field):
    response = client.get(f"/api/v1/events?{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 400 and field in problem["errors"]
    assert field in problem["detail"]


def test_full_pages_are_cached_for_long_and_the_head_page_revalidates(loaded, client):
    full = client.get("/api/v1/events?after=0&limit=10")
    assert "immutable" in full.headers["Cache-Control"]
    assert "max-age=31536000" in full.headers["Cache-Control"]

    head_page = client.get("/api/v1/events?after=20&limit=100")
    assert head_page.headers["Cache-Control"] == "no-cache"
    etag = head_page.headers["ETag"]
    unchanged = client.get("/api/v1/events?after=20&limit=100", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""

    record(loaded, "us-safe-chips-bill", 1)
    changed = client.get("/api/v1/events?after=20&limit=100", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert len(changed.get_json()["events"]) == len(head_page.get_json()["events"]) + 1

    # A full page revalidates to 304 even though the head has moved on since.
    again = client.get("/api/v1/events?after=0&limit=10", headers={"If-None-Match": full.headers["ETag"]})
    assert again.status_code == 304


class GappyLog:
    """A tracker's event log with gaps in its positions, as a rolled-back PostgreSQL
    transaction leaves them."""

    def __init__(self, tracker: Tracker, positions: list[int]):
        self._events = [event for _, event in tracker.events_after(0, 1000)]
        self._rows = list(zip(positions, self._events))

    def events_after(self, position: int, limit: int):
        return [row for row in self._rows if row[0] > position][:limit]

    def head(self) -> int:
        return self._rows[-1][0]


def test_gaps_in_positions_lose_and_repeat_nothing(loaded):
    positions = [1, 2, 5, 6, 7, 10, 11, 12, 20, 21, 22, 23, 30, 31, 40, 41, 42, 43, 44, 45, 50, 51, 52, 60, 61, 70]
    gappy = GappyLog(loaded, positions[: loaded.head()])
    seen, after = [], 0
    while True:
        page = read_page(gappy, after, 4)
        seen.extend(int(e["sequence"]) for e in page.events)
        if not page.events:
            break
        after = page.next_after
    assert seen == positions[: loaded.head()]
    assert read_page(gappy, 3, 2).events[0]["sequence"] == "00000000000000000005"


# Concurrent writers -------------------------------------------------------------------------------


def consume_while(client, running, limit: int = 7) -> tuple[list[dict], set[int]]:
    """Page the feed while ``running()`` holds, then once more to the head; events and heads seen."""
    seen: list[dict] = []
    heads: set[int] = set()
    after = 0
    finishing = False
    while True:
        body = client.get(f"/api/v1/events?after={after}&limit={limit}").get_json()
        seen.extend(body["events"])
        heads.add(body["head"])
        after = body["next_after"]
        if len(body["events"]) < limit:
            if finishing:
                return seen, heads
            if not running():
                finishing = True  # writers are done: one more pass reaches the true head


def assert_exactly_once_in_order(seen: list[dict], tracker: Tracker, expected_count: int) -> None:
    positions = [int(e["sequence"]) for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    ids = [e["id"] for e in seen]
    assert len(set(ids)) == len(ids)
    assert len(seen) == expected_count == tracker.head()
    stored = [position for position, _ in tracker.events_after(0, 100_000)]
    assert positions == stored


def test_concurrent_writer_threads_while_a_consumer_pages(tracker, client):
    writers, each = 4, 40
    for n in range(writers):
        register(tracker, f"rule-thread-{n}")
    threads = [threading.Thread(target=record, args=(tracker, f"rule-thread-{n}", each))
               for n in range(writers)]
    for thread in threads:
        thread.start()
    seen, heads = consume_while(client, lambda: any(t.is_alive() for t in threads))
    for thread in threads:
        thread.join()
    assert len(heads) > 2, "the consumer should have paged while the writers wrote"
    assert_exactly_once_in_order(seen, tracker, writers + writers * each)


WRITER = """
import sys
from pathlib import Path
from timeline.config import Settings
from timeline.service import Tracker
tracker = Tracker(Settings(home=Path(sys.argv[1]), database_url=sys.argv[4] or None))
for n in range(int(sys.argv[3])):
    tracker.record_action(sys.argv[2], {"kind": "propose", "effective": "2025-01",
                                        "summary": f"step {n}", "sources": [{"title": "S"}]})
tracker.close()
"""


@pytest.mark.slow
def test_concurrent_writer_processes_on_one_store_while_a_consumer_pages(tracker, settings):
    writers, each = 3, 40
    for n in range(writers):
        register(tracker, f"rule-process-{n}")
    client = make_app(tracker).test_client()
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(settings.home), f"rule-process-{n}", str(each),
                          settings.database_url or ""],
                         env=os.environ.copy(), cwd=Path(__file__).parent)
        for n in range(writers)
    ]
    seen, heads = consume_while(client, lambda: any(p.poll() is None for p in processes))
    assert [p.wait() for p in processes] == [0] * writers
    assert len(heads) > 2, "the consumer should have paged while the writers wrote"
    assert_exactly_once_in_order(seen, tracker, writers + writers * each)
