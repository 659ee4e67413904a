"""Webhook delivery: signed by Standard Webhooks, each event retried on its own schedule, never lost.

Receivers listen on 127.0.0.1 (the stores here allow private addresses). Retries are driven by
a fake clock, so no test waits for a back-off to pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from standardwebhooks.webhooks import Webhook

from timeline.feed.delivery import (
    RETRY_SCHEDULE, DeliveryWorker, HttpSender, message_id, parse_retry_after, signed_headers,
    start_delivery_worker,
)
from timeline.feed.webhooks import WebhookStore
from timeline.service import Tracker
from timeline.tokens import TokenStore

from feed_support import deliver_until_idle, make_app, record, register, wait_until

# The Standard Webhooks reference libraries' signing test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class Clock:
    """Scheduling time for the worker; starts at the wall clock and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def subscribe(tracker: Tracker, url: str, types=None) -> tuple[str, str]:
    endpoint, secret = WebhookStore(tracker.settings).register(url, types, tracker.head())
    return endpoint.id, secret


def worker(tracker: Tracker, clock: Clock, **options) -> DeliveryWorker:
    options.setdefault("rng", lambda: 1.0)  # the longest jitter
    return DeliveryWorker(tracker, now=clock, **options)


def cloudevent(received) -> dict:
    return json.loads(received.body)


def assert_signed(received, secret: str) -> None:
    """The receiver's check, as a Standard Webhooks library does it."""
    Webhook(secret).verify(received.body, received.header_dict)


# Signing -------------------------------------------------------------------------------------------


def test_the_signer_matches_the_standard_webhooks_test_vector():
    at = datetime.fromtimestamp(VECTOR_TIMESTAMP, timezone.utc)
    headers = signed_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_PAYLOAD, at)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    # The same by the spec's recipe, without the package: HMAC-SHA256 over "id.timestamp.body".
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{VECTOR_ID}.{VECTOR_TIMESTAMP}.{VECTOR_PAYLOAD}".encode(), hashlib.sha256)
    assert VECTOR_SIGNATURE == "v1," + base64.b64encode(digest.digest()).decode()


def test_message_ids_are_stable_per_event_and_endpoint():
    assert message_id("wh_a", "rule:3") == message_id("wh_a", "rule:3")
    assert message_id("wh_a", "rule:3") != message_id("wh_b", "rule:3")
    assert message_id("wh_a", "rule:3") != message_id("wh_a", "rule:4")
    assert "." not in message_id("wh_a", "rule:3")


# Delivering ----------------------------------------------------------------------------------------


def test_each_event_after_registration_arrives_signed_with_lower_case_headers(
    private_tracker, clock, receiver_factory
):
    register(private_tracker, "us-before-rule")  # recorded before: not sent
    receiver = receiver_factory()
    webhook_id, secret = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-after-rule")
    record(private_tracker, "us-after-rule", 2)

    assert deliver_until_idle(worker(private_tracker, clock)) == 3
    feed = make_app(private_tracker).test_client().get("/api/v1/events?after=1").get_json()["events"]
    assert [cloudevent(r) for r in receiver.requests] == feed
    for received in receiver.requests:
        assert_signed(received, secret)
        names = [name for name, _ in received.headers]
        assert names == [name.lower() for name in names]
        assert received.header("content-type").startswith("application/cloudevents+json")
        assert received.path == "/hook"
    assert len({r.header("webhook-id") for r in receiver.requests}) == 3
    endpoint = WebhookStore(private_tracker.settings).get(webhook_id)
    assert endpoint.delivered_count == 3 and endpoint.settled_through == private_tracker.head()


def test_a_receiver_on_ipv6_loopback_is_reached_by_its_address(private_tracker, clock, receiver_factory):
    try:
        receiver = receiver_factory(host="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here ({exc})")
    subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-ipv6-rule")
    deliver_until_idle(worker(private_tracker, clock))
    [received] = receiver.requests
    assert received.header("host") == receiver.url.split("/")[2]


def test_a_failed_try_is_retried_with_the_same_webhook_id_within_10_seconds(
    private_tracker, clock, receiver_factory
):
    receiver = receiver_factory(script=[(500, {})])
    webhook_id, secret = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-retry-rule")
    deliveries = worker(private_tracker, clock)

    deliver_until_idle(deliveries)
    assert len(receiver.requests) == 1
    endpoint = deliveries.store.get(webhook_id)
    assert endpoint.pending.attempts == 1 and endpoint.last_status == 500
    assert 5 <= endpoint.pending.next_try_at - clock.now <= 10  # the longest jitter still keeps it under 10 s

    deliver_until_idle(deliveries)  # not due yet
    assert len(receiver.requests) == 1
    clock.advance(10)
    deliver_until_idle(deliveries)
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.header("webhook-id") == second.header("webhook-id")
    assert first.body == second.body
    assert_signed(first, secret)
    assert_signed(second, secret)
    token = TokenStore(private_tracker.settings).create("ops")
    shown = make_app(private_tracker).test_client().get(
        f"/api/v1/webhooks/{webhook_id}", headers={"Authorization": f"Bearer {token}"},
    ).get_json()
    assert shown["delivered"] == 1 and shown["pending"] is None and shown["last_attempt"]["status"] == 204


def test_retries_follow_the_standard_schedule_then_give_up_and_go_on(
    private_tracker, clock, receiver_factory
):
    tries = 1 + len(RETRY_SCHEDULE)
    # The first try of 1 fails, 2 goes through, then every try of 1 fails.
    receiver = receiver_factory(script=[(500, {}), (204, {})] + [(500, {})] * (tries - 1))
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-doomed-rule")
    register(private_tracker, "us-next-rule")
    deliveries = worker(private_tracker, clock, rng=lambda: 0.0)

    delays = []
    for _ in range(tries):
        deliver_until_idle(deliveries)
        endpoint = deliveries.store.get(webhook_id)
        if not endpoint.pending.count:
            break
        delays.append(round(endpoint.pending.next_try_at - clock.now))
        clock.advance(endpoint.pending.next_try_at - clock.now)
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    positions = [int(cloudevent(r)["sequence"]) for r in receiver.requests]
    # 2 went through at once, not held back by 1; 1 was given up on after its last try.
    assert positions == [1, 2] + [1] * (tries - 1)
    assert receiver.requests[2].header("webhook-id") == receiver.requests[0].header("webhook-id")
    [failure] = deliveries.store.failures(webhook_id)
    assert failure["position"] == 1 and failure["attempts"] == tries
    assert failure["message_id"] == receiver.requests[0].header("webhook-id")
    assert (failure["last_status"], failure["last_error"]) == (500, "HTTP 500")
    endpoint = deliveries.store.get(webhook_id)
    assert endpoint.failed_count == 1 and endpoint.delivered_count == 1


def test_retry_after_is_honoured(private_tracker, clock, receiver_factory):
    later = format_datetime(datetime.fromtimestamp(time.time() + 3600, timezone.utc), usegmt=True)
    receiver = receiver_factory(script=[(503, {"Retry-After": "120"}), (429, {"Retry-After": later})])
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-busy-rule")
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)
    assert deliveries.store.get(webhook_id).pending.next_try_at - clock.now >= 120
    clock.advance(119)
    deliver_until_idle(deliveries)
    assert len(receiver.requests) == 1
    clock.advance(1)
    deliver_until_idle(deliveries)
    assert len(receiver.requests) == 2
    assert deliveries.store.get(webhook_id).pending.next_try_at - clock.now > 3000


def test_parse_retry_after_reads_seconds_and_dates():
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("99999999") == 86400


def test_410_gone_disables_the_endpoint(private_tracker, clock, receiver_factory):
    receiver = receiver_factory(script=[(410, {})])
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-gone-rule")
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)
    record(private_tracker, "us-gone-rule", 3)
    clock.advance(100_000)
    deliver_until_idle(deliveries)
    assert len(receiver.requests) == 1
    endpoint = deliveries.store.get(webhook_id)
    assert not endpoint.active and "410" in endpoint.disabled_reason


def test_redirects_are_not_followed(private_tracker, clock, receiver_factory):
    elsewhere = receiver_factory()
    receiver = receiver_factory(script=[(307, {"Location": elsewhere.url})])
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-moved-rule")
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)
    assert elsewhere.requests == []
    endpoint = deliveries.store.get(webhook_id)
    assert endpoint.pending.attempts == 1 and endpoint.last_status == 307
    assert "redirects are not followed" in endpoint.last_error


def test_a_slow_receiver_times_out_and_is_tried_again(private_tracker, clock, receiver_factory):
    receiver = receiver_factory(delay=2.0)
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-slow-rule")
    deliveries = worker(private_tracker, clock, sender=HttpSender(allow_private=True, timeout=0.3))
    deliver_until_idle(deliveries)
    endpoint = deliveries.store.get(webhook_id)
    assert endpoint.pending.attempts == 1 and endpoint.last_status is None
    assert "Timeout" in endpoint.last_error


def test_the_default_timeout_is_15_seconds(private_tracker):
    assert DeliveryWorker(private_tracker).sender.timeout == 15


def test_a_refused_event_does_not_hold_back_the_events_after_it(
    private_tracker, clock, receiver_factory
):
    receiver = receiver_factory(script=[(204, {}), (500, {}), (502, {}), (204, {})])
    subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-order-rule")
    record(private_tracker, "us-order-rule", 4)
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)
    positions = [int(cloudevent(r)["sequence"]) for r in receiver.requests]
    assert positions == [1, 2, 3, 4, 5]  # 4 and 5 arrive although 2 and 3 were refused
    clock.advance(10)
    deliver_until_idle(deliveries)
    positions = [int(cloudevent(r)["sequence"]) for r in receiver.requests]
    assert positions == [1, 2, 3, 4, 5, 2, 3]
    assert len({r.header("webhook-id") for r in receiver.requests}) == 5


def test_types_filter_what_is_sent(private_tracker, clock, receiver_factory):
    receiver = receiver_factory()
    webhook_id, _ = subscribe(private_tracker, receiver.url, ["timeline.action.retracted"])
    register(private_tracker, "us-typed-rule")
    private_tracker.record_action("us-typed-rule", {"id": "a1", "kind": "ban", "effective": "2025",
                                                    "sources": [{"title": "S"}]})
    private_tracker.retract_action("us-typed-rule", "a1", "wrong rule")
    record(private_tracker, "us-typed-rule", 2)
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)
    assert [cloudevent(r)["type"] for r in receiver.requests] == ["timeline.action.retracted"]
    assert deliveries.store.get(webhook_id).settled_through == private_tracker.head()


def test_a_restarted_worker_resumes_mid_retry_and_loses_nothing(
    private_settings, clock, receiver_factory
):
    receiver = receiver_factory(script=[(500, {}), (204, {}), (204, {}), (503, {})])
    first = Tracker(private_settings)
    webhook_id, secret = subscribe(first, receiver.url)
    register(first, "us-restart-rule")
    record(first, "us-restart-rule", 2)
    deliver_until_idle(worker(first, clock))
    clock.advance(10)
    deliver_until_idle(worker(first, clock))
    assert len(receiver.requests) == 4  # 1 failed twice; 2 and 3 went through
    first.close()  # the process stops mid-retry

    second = Tracker(private_settings)
    try:
        record(second, "us-restart-rule", 1)
        restarted = worker(second, clock)
        deliver_until_idle(restarted)
        assert len(receiver.requests) == 5  # the new event; 1's back-off survives the restart
        clock.advance(400)
        deliver_until_idle(restarted)
        positions = [int(cloudevent(r)["sequence"]) for r in receiver.requests]
        assert positions == [1, 2, 3, 1, 4, 1]
        ids = [r.header("webhook-id") for r in receiver.requests]
        assert ids[0] == ids[3] == ids[5] and len(set(ids)) == 4
        for received in receiver.requests:
            assert_signed(received, secret)
    finally:
        second.close()


def test_a_crashed_workers_lease_runs_out_and_another_takes_over(
    private_tracker, clock, receiver_factory
):
    receiver = receiver_factory()
    webhook_id, _ = subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-lease-rule")
    survivor = worker(private_tracker, clock, lease=60)
    survivor.hand_out()
    store = WebhookStore(private_tracker.settings)
    [held] = store.claim("crashed-worker", clock.now, clock.now + 60, 10, 4)  # and never settles
    assert deliver_until_idle(survivor) == 0
    assert receiver.requests == []
    clock.advance(61)
    assert deliver_until_idle(survivor) == 1
    assert len(receiver.requests) == 1
    assert not store.delivered(held, "crashed-worker", "x", "msg", 200, clock.now)  # too late
    assert store.get(webhook_id).delivered_count == 1


def test_only_one_worker_can_hold_a_try(private_tracker, clock):
    webhook_id, _ = subscribe(private_tracker, "http://127.0.0.1:9/hook")
    register(private_tracker, "us-held-rule")
    worker(private_tracker, clock).hand_out()
    store = WebhookStore(private_tracker.settings)
    [held] = store.claim("a", clock.now, clock.now + 60, 10, 4)
    assert store.claim("b", clock.now, clock.now + 60, 10, 4) == []
    assert not store.delivered(held, "b", "x", "msg", 200, clock.now)  # b cannot settle what a holds
    assert store.release(held, "a")
    assert [t.position for t in store.claim("b", clock.now, clock.now + 60, 10, 4)] == [1]


def test_tries_in_flight_to_one_endpoint_are_capped(private_tracker, clock, receiver_factory):
    webhook_id, _ = subscribe(private_tracker, receiver_factory().url)
    register(private_tracker, "us-capped-rule")
    deliveries = worker(private_tracker, clock)
    deliver_until_idle(deliveries)  # the endpoint has answered: it may have more than one try in flight
    record(private_tracker, "us-capped-rule", 5)
    deliveries.hand_out()
    store = WebhookStore(private_tracker.settings)
    assert len(store.claim("a", clock.now, clock.now + 60, 10, 2)) == 2
    assert store.claim("b", clock.now, clock.now + 60, 10, 2) == []
    clock.advance(61)  # the leases ran out: they count no more
    assert len(store.claim("b", clock.now, clock.now + 60, 10, 2)) == 2


def test_an_endpoint_with_many_tries_due_takes_no_place_from_the_others(private_tracker, clock):
    crowded, _ = subscribe(private_tracker, "http://127.0.0.1:9/crowded")
    register(private_tracker, "us-crowded-rule")
    record(private_tracker, "us-crowded-rule", 30)
    deliveries = worker(private_tracker, clock)
    deliveries.hand_out()  # 31 tries due to an endpoint that has room for one
    clock.advance(1)
    other, _ = subscribe(private_tracker, "http://127.0.0.1:9/other")
    record(private_tracker, "us-crowded-rule", 1)
    deliveries.hand_out()
    store = WebhookStore(private_tracker.settings)
    claimed = store.claim("a", clock.now, clock.now + 60, 2, 4)
    assert sorted((t.webhook_id, t.position) for t in claimed) == sorted([(crowded, 1), (other, 32)])


def test_an_endpoint_that_has_not_answered_or_is_failing_gets_one_try_at_a_time(
    private_tracker, clock
):
    webhook_id, _ = subscribe(private_tracker, "http://127.0.0.1:9/hook")
    register(private_tracker, "us-unproven-rule")
    record(private_tracker, "us-unproven-rule", 5)
    worker(private_tracker, clock).hand_out()
    store = WebhookStore(private_tracker.settings)
    assert len(store.claim("a", clock.now, clock.now + 60, 10, 4)) == 1
    assert store.claim("b", clock.now, clock.now + 60, 10, 4) == []


def test_concurrent_workers_deliver_each_event_once(private_tracker, receiver_factory):
    receivers = [receiver_factory() for _ in range(3)]
    for receiver in receivers:
        subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-busy-rule")
    record(private_tracker, "us-busy-rule", 24)
    workers = [DeliveryWorker(private_tracker) for _ in range(4)]
    threads = [threading.Thread(target=deliver_until_idle, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for receiver in receivers:
        positions = [int(cloudevent(r)["sequence"]) for r in receiver.requests]
        assert sorted(positions) == list(range(1, 26))  # each once; the order is not promised


def test_the_background_worker_delivers_new_events_until_stopped(private_tracker, receiver_factory):
    receiver = receiver_factory()
    subscribe(private_tracker, receiver.url)
    stop = threading.Event()
    thread = start_delivery_worker(private_tracker, stop, poll=0.05, threads=2)
    try:
        register(private_tracker, "us-background-rule")
        record(private_tracker, "us-background-rule", 3)
        wait_until(lambda: len(receiver.requests) == 4, what="four deliveries")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert sorted(int(cloudevent(r)["sequence"]) for r in receiver.requests) == [1, 2, 3, 4]


@pytest.mark.slow
def test_timeline_webhooks_run_delivers_until_interrupted(private_tracker, private_settings, receiver_factory):
    receiver = receiver_factory()
    subscribe(private_tracker, receiver.url)
    register(private_tracker, "us-cli-rule")
    env = dict(os.environ, TIMELINE_HOME=str(private_settings.home), TIMELINE_WEBHOOK_ALLOW_PRIVATE="1")
    env.pop("TIMELINE_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "timeline", "webhooks", "run"], env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(receiver.requests) == 1, what="the worker's first delivery")
        record(private_tracker, "us-cli-rule", 1)
        wait_until(lambda: len(receiver.requests) == 2, what="a delivery of a new event")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Stopped." in stderr
    assert sorted(int(cloudevent(r)["sequence"]) for r in receiver.requests) == [1, 2]
