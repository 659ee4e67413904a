"""GET /api/v1/events/stream: Server-Sent Events that resume where the consumer left off."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from timeline.feed.sse import PollWaiter, StreamLimits, event_stream

from feed_support import make_app, record, register, wait_until


def parse_sse(text: str) -> tuple[list[dict], list[str]]:
    """Events (id, event, data) and comment lines, as an EventSource would see them."""
    events, comments = [], []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        if "data" in fields:
            events.append({"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])})
    return events, comments


def stream(
    tracker, path: str = "/api/v1/events/stream", headers=None, writes=None, **config
) -> tuple[list[dict], list[str]]:
    """Open the stream in the test client, optionally write while it runs, read until it ends."""
    config.setdefault("TIMELINE_FEED_POLL_SECONDS", 0.02)
    config.setdefault("TIMELINE_SSE_MAX_SECONDS", 10)
    client = make_app(tracker, **config).test_client()
    response = client.get(path, headers=headers or {}, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    writer = threading.Thread(target=writes) if writes else None
    if writer:
        writer.start()
    text = b"".join(response.response).decode()
    if writer:
        writer.join()
    return parse_sse(text)


def positions(events: list[dict]) -> list[int]:
    return [int(e["id"]) for e in events]


def test_events_carry_position_type_and_the_cloudevent(loaded):
    events, _ = stream(loaded, "/api/v1/events/stream?after=0", TIMELINE_SSE_MAX_EVENTS=loaded.head())
    feed = make_app(loaded).test_client().get("/api/v1/events").get_json()["events"]
    assert [e["data"] for e in events] == feed
    for event in events:
        assert event["event"] == event["data"]["type"]
        assert int(event["id"]) == int(event["data"]["sequence"])


def test_without_a_position_the_stream_starts_at_the_head(loaded):
    head = loaded.head()
    events, _ = stream(loaded, writes=lambda: record(loaded, "us-safe-chips-bill", 3),
                       TIMELINE_SSE_MAX_EVENTS=3)
    assert positions(events) == [head + 1, head + 2, head + 3]
    assert [e["data"]["data"]["summary"] for e in events] == ["step 0", "step 1", "step 2"]


@pytest.mark.parametrize("where", ["start", "middle", "head", "past the head"])
def test_resuming_with_after_or_last_event_id(loaded, where):
    head = loaded.head()
    after = {"start": 0, "middle": head // 2, "head": head, "past the head": head + 3}[where]
    writes = 6  # positions head+1 .. head+6
    expected = [p for p in range(1, head + writes + 1) if p > after]
    for how in ("query", "header"):
        path = f"/api/v1/events/stream?after={after}" if how == "query" else "/api/v1/events/stream"
        headers = {"Last-Event-ID": str(after)} if how == "header" else {}
        if how == "query":
            write = lambda: record(loaded, "us-safe-chips-bill", writes)  # noqa: E731
        else:
            write = None  # the events are there by now
        events, _ = stream(loaded, path, headers, writes=write, TIMELINE_SSE_MAX_EVENTS=len(expected))
        assert positions(events) == expected, how


def test_last_event_id_wins_over_after(loaded):
    head = loaded.head()
    events, _ = stream(loaded, "/api/v1/events/stream?after=1", {"Last-Event-ID": str(head - 2)},
                       TIMELINE_SSE_MAX_EVENTS=2)
    assert positions(events) == [head - 1, head]


@pytest.mark.parametrize("path, headers, field", [
    ("/api/v1/events/stream?after=-3", {}, "after"),
    ("/api/v1/events/stream?after=x", {}, "after"),
    ("/api/v1/events/stream", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ("/api/v1/events/stream?after=2", {"Last-Event-ID": "-1"}, "Last-Event-ID"),
])
def test_bad_positions_are_400_problems(app, path, headers, field):
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClockWaiter:
    """Waiting moves the fake clock on, and at set times an event appears."""

    def __init__(self, clock: FakeClock, rows: list, arrivals: dict[float, int]):
        self.clock, self.rows, self.arrivals = clock, rows, arrivals
        self.longest_wait = 0.0

    def wait(self, after: int, timeout: float) -> None:
        self.longest_wait = max(self.longest_wait, timeout)
        self.clock.now += max(timeout, 0.001)
        for at, position in list(self.arrivals.items()):
            if self.clock.now >= at:
                self.rows.append((position, self.template))
                del self.arrivals[at]


def test_a_heartbeat_comment_comes_at_least_every_15_seconds(loaded):
    clock = FakeClock()
    rows: list = []
    waiter = ClockWaiter(clock, rows, {1030.0: 101, 1031.0: 102, 1100.0: 103})
    waiter.template = loaded.events_after(0, 1)[0][1]
    stamps: list[tuple[float, str]] = []
    source = lambda after, limit: [r for r in rows if r[0] > after][:limit]  # noqa: E731
    for chunk in event_stream(source, 100, waiter, StreamLimits(max_seconds=200), clock=clock):
        stamps.append((clock.now, chunk))
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) <= 15.0
    assert sum(1 for _, chunk in stamps if chunk == ": heartbeat\n\n") >= 5
    assert [int(chunk.split("\n")[0][4:]) for _, chunk in stamps if chunk.startswith("id:")] == [101, 102, 103]
    assert waiter.longest_wait <= 15.0


def test_poll_waiter_reads_the_store_at_most_every_half_second():
    sleeps: list[float] = []
    waiter = PollWaiter(sleep=sleeps.append)
    waiter.wait(0, 15.0)
    waiter.wait(0, 0.1)
    assert sleeps == [0.5, 0.1]


def test_a_live_client_over_http_gets_new_events_and_resumes_with_last_event_id(
    tracker, live_server_factory
):
    register(tracker, "us-live-rule")
    server = live_server_factory(make_app(tracker, TIMELINE_SSE_MAX_EVENTS=3, TIMELINE_FEED_POLL_SECONDS=0.05))
    host, port = server.url.removeprefix("http://").split(":")

    def read_events(headers: dict[str, str]) -> list[dict]:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/v1/events/stream", headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        first = response.readline()  # the stream opens at once, before any event
        assert first.startswith(b"retry:")
        writer = threading.Thread(target=record, args=(tracker, "us-live-rule", 3))
        writer.start()
        body = first + response.read()
        writer.join()
        connection.close()
        return parse_sse(body.decode())[0]

    live = read_events({})
    assert positions(live) == [2, 3, 4]
    resumed = read_events({"Last-Event-ID": "3"})
    assert positions(resumed) == [4, 5, 6]
    assert [e["data"]["type"] for e in resumed] == ["timeline.action.recorded"] * 3
    wait_until(lambda: tracker.head() == 7, what="the last writes")


def test_filters_keep_only_the_matching_events_in_order(loaded):
    """The stream takes the feed's filters; what it skips never holds up what matches."""
    from feed_support import register

    register(loaded, "us-filtered-rule")
    head = loaded.head()

    def writes() -> None:
        record(loaded, "us-safe-chips-bill", 150)  # more than a batch of others first
        record(loaded, "us-filtered-rule", 2)

    events, _ = stream(loaded, f"/api/v1/events/stream?after={head}&rule=us-filtered-rule",
                       writes=writes, TIMELINE_SSE_MAX_EVENTS=2)
    assert positions(events) == [head + 151, head + 152]
    assert {e["data"]["subject"] for e in events} == {"us-filtered-rule"}

    events, _ = stream(loaded, f"/api/v1/events/stream?after={head}&jurisdiction=CN",
                       TIMELINE_SSE_MAX_EVENTS=1, TIMELINE_SSE_MAX_SECONDS=1)
    assert events == []  # both rules are US rules
