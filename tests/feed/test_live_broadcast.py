"""One broadcaster per process: subscribers share its reads, resume gap-free, and filter."""

from __future__ import annotations

import asyncio
import threading

import pytest

from timeline.domain.errors import InvalidInput
from timeline.feed.filters import EventFilter
from timeline.feed.live import AtCapacity, Broadcaster
from timeline.feed.sse import PollWaiter, StreamLimits

from feed_support import record, register


def positions_of(chunks: list[bytes]) -> list[int]:
    return [int(line[4:]) for chunk in chunks for line in chunk.decode().split("\n")
            if line.startswith("id: ")]


async def follow(broadcaster: Broadcaster, start: int, count: int,
                 wanted: EventFilter = EventFilter()) -> list[bytes]:
    chunks = []
    limits = StreamLimits(max_events=count, max_seconds=30)
    async for chunk in broadcaster.events(start, wanted, limits):
        chunks.append(chunk)
    return chunks


def test_subscribers_get_every_event_once_in_order_across_the_window(loaded):
    """A window of 3 events: subscribers far behind read the store, then join the window."""
    register(loaded, "us-live-rule")
    head = loaded.head()
    broadcaster = Broadcaster(loaded, PollWaiter(0.01), capacity=10, window=3)
    reads: list[int] = []
    events_after = loaded.events_after
    loaded.events_after = lambda after, limit: reads.append(after) or events_after(after, limit)

    async def run() -> list[list[int]]:
        broadcaster.start()
        writer = threading.Thread(target=record, args=(loaded, "us-live-rule", 12))
        followers = [
            asyncio.ensure_future(follow(broadcaster, start, head + 12 - start))
            for start in (0, head // 2, head, head)
        ]
        await asyncio.sleep(0.05)
        writer.start()
        done = await asyncio.gather(*followers)
        await asyncio.to_thread(writer.join)
        broadcaster.close()
        return [positions_of(chunks) for chunks in done]

    try:
        got = asyncio.run(run())
    finally:
        loaded.events_after = events_after
    for start, positions in zip((0, head // 2, head, head), got):
        assert positions == list(range(start + 1, head + 13))
    assert reads  # the store was read (the subscribers far behind did so themselves)


def test_subscribers_at_the_head_share_the_broadcasters_reads(loaded):
    register(loaded, "us-live-rule")
    head = loaded.head()
    broadcaster = Broadcaster(loaded, PollWaiter(0.01), capacity=100)
    readers: list[str] = []
    events_after = loaded.events_after
    loaded.events_after = lambda after, limit: (
        readers.append(threading.current_thread().name) or events_after(after, limit))

    async def run() -> list[list[int]]:
        broadcaster.start()
        followers = [asyncio.ensure_future(follow(broadcaster, head, 5)) for _ in range(50)]
        await asyncio.sleep(0.05)
        writer = threading.Thread(target=record, args=(loaded, "us-live-rule", 5), name="writer")
        writer.start()
        done = await asyncio.gather(*followers)
        await asyncio.to_thread(writer.join)
        broadcaster.close()
        return [positions_of(chunks) for chunks in done]

    try:
        got = asyncio.run(run())
    finally:
        loaded.events_after = events_after
    assert got == [list(range(head + 1, head + 6))] * 50
    # No subscriber read the store itself: only the broadcaster (and the writer, projecting).
    assert set(readers) <= {"timeline-broadcast", "writer"}


def test_a_filter_lets_through_the_matching_events_of_new_and_old_rules(loaded):
    register(loaded, "us-live-rule")
    loaded.register_rule({"id": "cn-live-rule", "title": "CN", "jurisdiction": "CN",
                          "instrument": "sanction", "targets": [], "subjects": [], "tags": [],
                          "links": []})
    head = loaded.head()
    broadcaster = Broadcaster(loaded, PollWaiter(0.01), capacity=10)

    async def run() -> list[int]:
        broadcaster.start()
        wanted = EventFilter.from_query({"jurisdiction": ["CN"], "instrument": ["sanction"]})
        follower = asyncio.ensure_future(follow(broadcaster, head, 2, wanted))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(record, loaded, "us-live-rule", 2)
        await asyncio.to_thread(record, loaded, "cn-live-rule", 2)
        chunks = await follower
        broadcaster.close()
        return positions_of(chunks)

    assert asyncio.run(run()) == [head + 3, head + 4]


def test_a_subscriber_past_capacity_is_refused_and_a_leaving_one_frees_its_place(tracker):
    broadcaster = Broadcaster(tracker, PollWaiter(0.01), capacity=2)
    with broadcaster.slot(), broadcaster.slot():
        with pytest.raises(AtCapacity):
            with broadcaster.slot():
                pass
        assert broadcaster.subscribers == 2
    with broadcaster.slot():
        assert broadcaster.subscribers == 1
    assert broadcaster.subscribers == 0


@pytest.mark.parametrize("args, field", [
    ({"jurisdiction": ["XX"]}, "jurisdiction"),
    ({"instrument": ["tariff"]}, "instrument"),
])
def test_unknown_filter_values_are_bad_parameters(args, field):
    with pytest.raises(InvalidInput) as raised:
        EventFilter.from_query(args)
    assert field in raised.value.errors


def test_filters_take_repeated_and_comma_separated_values():
    wanted = EventFilter.from_query({"rule": ["a-rule,b-rule", "c-rule"], "jurisdiction": ["US"]})
    assert wanted.rules == {"a-rule", "b-rule", "c-rule"}
    assert wanted.jurisdictions == {"US"} and not wanted.instruments
    assert EventFilter.from_query({}).everything


def test_a_quiet_stream_sends_heartbeats_and_ends_when_the_server_stops(tracker):
    broadcaster = Broadcaster(tracker, PollWaiter(0.01), capacity=10)

    async def run() -> list[bytes]:
        chunks: list[bytes] = []

        async def collect() -> None:
            async for chunk in broadcaster.events(tracker.head(), EventFilter(),
                                                  StreamLimits(heartbeat=0.05)):
                chunks.append(chunk)

        follower = asyncio.ensure_future(collect())
        await asyncio.sleep(0.5)
        broadcaster.close()  # no bound on the stream: only the server stopping ends it
        await asyncio.wait_for(follower, 10)
        return chunks

    chunks = asyncio.run(run())
    assert chunks[0].startswith(b"retry: ")
    assert chunks.count(b": heartbeat\n\n") >= 3
