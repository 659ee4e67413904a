"""Filters on the feed and on webhooks, the deliveries log, replays, disabling, and the old
table shape moving to the new one."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import pytest

from timeline.feed import paging
from timeline.feed.delivery import DeliveryWorker, HttpSender, Result, start_delivery_worker
from timeline.feed.webhooks import WebhookStore

from feed_support import deliver_until_idle, make_app, record, wait_until

SOURCE = [{"title": "Test source"}]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sender:
    """Answers from ``answer(position, attempt)``; notes every body sent."""

    def __init__(self, answer=lambda position, attempt: 204):
        self.answer = answer
        self.sent: list[dict] = []
        self.tries: dict[int, int] = {}

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> Result:
        event = json.loads(body)
        position = int(event["sequence"])
        self.tries[position] = self.tries.get(position, 0) + 1
        self.sent.append({"position": position, "webhook-id": headers["webhook-id"], "url": url})
        status = self.answer(position, self.tries[position])
        return Result(status, None if 200 <= status < 300 else f"HTTP {status}")


def add_rule(tracker, rule_id: str, jurisdiction: str = "US", instrument: str = "export_control"):
    tracker.register_rule({
        "id": rule_id, "title": rule_id, "jurisdiction": jurisdiction, "instrument": instrument,
        "targets": [], "subjects": [], "tags": [], "links": [],
    })


@pytest.fixture
def client(private_tracker):
    return make_app(private_tracker).test_client()


@pytest.fixture
def auth(private_token):
    return {"Authorization": f"Bearer {private_token}"}


# The paged feed, filtered ------------------------------------------------------------------------


def page_all(client, query: str, limit: int) -> tuple[list[int], int]:
    seen, after, pages = [], 0, 0
    while True:
        body = client.get(f"/api/v1/events?after={after}&limit={limit}&{query}").get_json()
        pages += 1
        seen.extend(int(e["sequence"]) for e in body["events"])
        assert body["next_after"] >= after
        if body["next_after"] == after:
            return seen, pages
        after = body["next_after"]


def test_filtered_feed_pages_give_every_matching_event_once_even_when_sparse(
    private_tracker, client, monkeypatch
):
    monkeypatch.setattr(paging, "SCAN_LIMIT", 7)  # a page looks at few events: sparse matches
    add_rule(private_tracker, "us-chips-rule", "US", "export_control")
    add_rule(private_tracker, "cn-tariff-rule", "CN", "import_tariff")
    record(private_tracker, "us-chips-rule", 20)
    record(private_tracker, "cn-tariff-rule", 2)
    record(private_tracker, "us-chips-rule", 15)
    all_events = client.get("/api/v1/events?limit=1000").get_json()["events"]
    cn = [int(e["sequence"]) for e in all_events if e["subject"] == "cn-tariff-rule"]
    assert len(cn) == 3

    for query in ("jurisdiction=CN", "instrument=import_tariff", "rule=cn-tariff-rule",
                  "jurisdiction=CN&instrument=import_tariff"):
        seen, pages = page_all(client, query, 2)
        assert seen == cn, query
        assert pages > 3  # the empty stretches were paged over, not skipped
    us, _ = page_all(client, "jurisdiction=US", 10)
    assert us == [int(e["sequence"]) for e in all_events if e["subject"] == "us-chips-rule"]
    both, _ = page_all(client, "jurisdiction=US,CN", 10)
    assert both == [int(e["sequence"]) for e in all_events]
    none, _ = page_all(client, "jurisdiction=CN&instrument=export_control", 10)
    assert none == []


def test_a_filtered_page_moves_past_events_it_looked_at(private_tracker, client):
    add_rule(private_tracker, "us-only-rule")
    record(private_tracker, "us-only-rule", 4)
    body = client.get("/api/v1/events?jurisdiction=DE").get_json()
    assert body["events"] == [] and body["next_after"] == body["head"] == 5


@pytest.mark.parametrize("query, field", [
    ("jurisdiction=XX", "jurisdiction"), ("instrument=laser", "instrument"),
    ("rule=Not%20A%20Rule", "rule"), ("type=timeline.nope", "type"),
])
def test_bad_feed_filters_are_422_problems(client, query, field):
    response = client.get(f"/api/v1/events?{query}")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


# Webhooks, filtered --------------------------------------------------------------------------------


def test_a_webhook_gets_only_the_events_matching_every_filter(private_tracker, client, auth):
    created = client.post("/api/v1/webhooks", headers=auth, json={
        "url": "http://127.0.0.1:9/hook", "jurisdictions": ["CN", "EU"],
        "instruments": ["import_tariff"], "types": ["timeline.action.recorded"],
    })
    assert created.status_code == 201
    body = created.get_json()
    assert body["jurisdictions"] == ["CN", "EU"] and body["instruments"] == ["import_tariff"]
    add_rule(private_tracker, "cn-tariff-rule", "CN", "import_tariff")
    add_rule(private_tracker, "cn-export-rule", "CN", "export_control")
    add_rule(private_tracker, "us-tariff-rule", "US", "import_tariff")
    for rule in ("cn-tariff-rule", "cn-export-rule", "us-tariff-rule"):
        record(private_tracker, rule, 2)
    sender = Sender()
    deliver_until_idle(DeliveryWorker(private_tracker, sender=sender))
    expected = [e for e in client.get("/api/v1/events?jurisdiction=CN&instrument=import_tariff"
                                      "&type=timeline.action.recorded").get_json()["events"]]
    assert len(expected) == 2
    assert sorted(s["position"] for s in sender.sent) == [int(e["sequence"]) for e in expected]


@pytest.mark.parametrize("extra, field", [
    ({"jurisdictions": ["XX"]}, "jurisdictions.0"),
    ({"instruments": ["laser"]}, "instruments.0"),
    ({"rules": ["Not A Rule"]}, "rules.0"),
    ({"rules": []}, "rules"),
    ({"jurisdictions": "CN"}, "jurisdictions"),
])
def test_bad_webhook_filters_are_422_and_store_nothing(client, auth, extra, field):
    response = client.post("/api/v1/webhooks", headers=auth,
                           json={"url": "http://127.0.0.1:9/hook", **extra})
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert client.get("/api/v1/webhooks", headers=auth).get_json()["items"] == []


# Seeing and fixing deliveries -----------------------------------------------------------------


def test_deliveries_list_recent_tries_newest_first(private_tracker, client, auth):
    webhook = client.post("/api/v1/webhooks", headers=auth,
                          json={"url": "http://127.0.0.1:9/hook"}).get_json()
    add_rule(private_tracker, "us-logged-rule")
    record(private_tracker, "us-logged-rule", 1)
    clock = Clock()
    sender = Sender(lambda position, attempt: 503 if position == 1 and attempt == 1 else 200)
    deliveries = DeliveryWorker(private_tracker, sender=sender, now=clock, rng=lambda: 0.0)
    deliver_until_idle(deliveries)
    clock.advance(5)
    deliver_until_idle(deliveries)

    path = f"/api/v1/webhooks/{webhook['id']}/deliveries"
    assert client.get(path).status_code == 401
    items = client.get(path, headers=auth).get_json()["items"]
    assert [(int(i["sequence"]), i["attempt"], i["status"]) for i in items] == [
        (1, 2, 200), (2, 1, 200), (1, 1, 503)]
    assert items[0]["sequence"] == client.get("/api/v1/events").get_json()["events"][0]["sequence"]
    first_try = items[2]
    assert first_try["error"] == "HTTP 503" and first_try["next_try_at"] is not None
    assert items[0]["error"] is None and items[0]["next_try_at"] is None
    assert items[0]["webhook_id"] == first_try["webhook_id"] == sender.sent[0]["webhook-id"]
    assert items[0]["event_id"] == client.get("/api/v1/events").get_json()["events"][0]["id"]
    assert len(client.get(path + "?limit=1", headers=auth).get_json()["items"]) == 1
    assert client.get(path + "?limit=0", headers=auth).status_code == 422
    assert client.get("/api/v1/webhooks/wh_nope/deliveries", headers=auth).status_code == 404


def test_the_deliveries_log_keeps_a_bounded_number_of_tries(private_tracker, monkeypatch):
    from timeline.feed import webhooks

    monkeypatch.setattr(webhooks, "KEEP_ATTEMPTS", 5)
    store = WebhookStore(private_tracker.settings)
    endpoint, _ = store.register("http://127.0.0.1:9/hook", None, 0)
    add_rule(private_tracker, "us-many-rule")
    record(private_tracker, "us-many-rule", 11)
    clock = Clock()
    deliver_until_idle(DeliveryWorker(private_tracker, sender=Sender(), now=clock, threads=1))
    kept = store.attempts(endpoint.id, 100)
    assert len(kept) == 5 and int(kept[0]["sequence"]) == 12


def test_replay_sends_matching_events_again_with_the_same_webhook_ids(private_tracker, client, auth):
    webhook = client.post("/api/v1/webhooks", headers=auth, json={
        "url": "http://127.0.0.1:9/hook", "rules": ["us-replayed-rule"],
    }).get_json()
    add_rule(private_tracker, "us-replayed-rule")
    add_rule(private_tracker, "us-other-rule")
    record(private_tracker, "us-replayed-rule", 3)
    sender = Sender()
    deliveries = DeliveryWorker(private_tracker, sender=sender)
    deliver_until_idle(deliveries)
    first = {s["position"]: s["webhook-id"] for s in sender.sent}
    assert sorted(first) == [1, 3, 4, 5]

    path = f"/api/v1/webhooks/{webhook['id']}/replay"
    assert client.post(path, json={"after": 3}).status_code == 401
    assert client.post(path, json={"after": -1}, headers=auth).status_code == 422
    assert client.post(path, json={"after": "3"}, headers=auth).status_code == 422
    assert client.post("/api/v1/webhooks/wh_nope/replay", json={"after": 0}, headers=auth).status_code == 404
    accepted = client.post(path, json={"after": 3}, headers=auth)
    assert accepted.status_code == 202
    deliver_until_idle(deliveries)
    again = sender.sent[4:]
    assert sorted(s["position"] for s in again) == [4, 5]
    assert all(s["webhook-id"] == first[s["position"]] for s in again)
    shown = client.get(f"/api/v1/webhooks/{webhook['id']}", headers=auth).get_json()
    assert shown["replaying"] is False and shown["delivered"] == 6


def test_an_endpoint_failing_every_try_for_5_days_is_disabled_and_shown_so(
    private_tracker, client, auth
):
    webhook = client.post("/api/v1/webhooks", headers=auth,
                          json={"url": "http://127.0.0.1:9/hook"}).get_json()
    clock = Clock()
    sender = Sender(lambda position, attempt: 500)
    deliveries = DeliveryWorker(private_tracker, sender=sender, now=clock)
    add_rule(private_tracker, "us-failing-rule")
    for _ in range(6):  # a new event each day, every try refused
        record(private_tracker, "us-failing-rule", 1)
        deliver_until_idle(deliveries)
        clock.advance(86400)
        deliver_until_idle(deliveries)
    shown = client.get(f"/api/v1/webhooks/{webhook['id']}", headers=auth).get_json()
    assert shown["active"] is False and "5 days" in shown["disabled_reason"]
    listed = client.get("/api/v1/webhooks", headers=auth).get_json()["items"]
    assert listed[0]["active"] is False and listed[0]["disabled_at"] is not None
    tried = len(sender.sent)
    record(private_tracker, "us-failing-rule", 1)
    clock.advance(86400)
    deliver_until_idle(deliveries)
    assert len(sender.sent) == tried  # nothing more goes to a disabled endpoint


def test_a_success_resets_the_five_days(private_tracker):
    store = WebhookStore(private_tracker.settings)
    endpoint, _ = store.register("http://127.0.0.1:9/hook", None, 0)
    clock = Clock()
    sender = Sender(lambda position, attempt: 200 if position % 2 else 500)
    deliveries = DeliveryWorker(private_tracker, sender=sender, now=clock)
    add_rule(private_tracker, "us-flaky-rule")
    for _ in range(8):
        record(private_tracker, "us-flaky-rule", 2)
        deliver_until_idle(deliveries)
        clock.advance(86400)
    assert store.get(endpoint.id).active


# The old shape ---------------------------------------------------------------------------------


def test_a_store_with_the_old_webhook_table_moves_to_the_new_one(private_settings, private_tracker):
    add_rule(private_tracker, "us-old-rule")
    record(private_tracker, "us-old-rule", 3)
    conn = sqlite3.connect(private_settings.sqlite_path)
    conn.execute(
        "CREATE TABLE timeline_webhooks (id TEXT PRIMARY KEY, url TEXT NOT NULL, types TEXT NOT NULL,"
        " secret TEXT NOT NULL, created_at TEXT NOT NULL, start_after BIGINT NOT NULL,"
        " delivered_through BIGINT NOT NULL, pending_position BIGINT, attempts INTEGER NOT NULL"
        " DEFAULT 0, next_try_at DOUBLE PRECISION NOT NULL DEFAULT 0, lease_owner TEXT,"
        " lease_until DOUBLE PRECISION, disabled_at TEXT, disabled_reason TEXT, last_attempt_at TEXT,"
        " last_status INTEGER, last_error TEXT, delivered_count BIGINT NOT NULL DEFAULT 0,"
        " failed_count BIGINT NOT NULL DEFAULT 0)")
    conn.execute(
        "INSERT INTO timeline_webhooks (id, url, types, secret, created_at, start_after,"
        " delivered_through, pending_position, attempts, next_try_at, delivered_count)"
        " VALUES ('wh_old', 'http://127.0.0.1:9/hook', '[]', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0',"
        " '2025-01-01T00:00:00Z', 0, 1, 2, 3, 0, 1)")
    conn.commit()
    conn.close()

    store = WebhookStore(private_settings)
    [endpoint] = store.list()
    assert endpoint.id == "wh_old" and endpoint.delivered_count == 1
    assert endpoint.pending.position == 2 and endpoint.pending.attempts == 3
    sender = Sender()
    deliver_until_idle(DeliveryWorker(private_tracker, sender=sender))
    assert sorted(s["position"] for s in sender.sent) == [2, 3, 4]
    assert store.get("wh_old").delivered_count == 4
    conn = sqlite3.connect(private_settings.sqlite_path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "timeline_webhooks" not in tables


# Failing receivers for real, on loopback ------------------------------------------------------------


class Silent:
    """A port that takes connections and never answers (until stopped)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


def test_silent_and_dead_endpoints_do_not_hold_back_the_others(private_tracker, receiver_factory):
    store = WebhookStore(private_tracker.settings)
    silent = [Silent() for _ in range(3)]
    try:
        for target in silent:
            store.register(target.url, None, 0)
        store.register(closed_port_url(), None, 0)
        live = [receiver_factory() for _ in range(6)]
        for receiver in live:
            store.register(receiver.url, None, 0)
        stop = threading.Event()
        # The silent ones would hold a try for a minute: the others must not wait for that.
        thread = start_delivery_worker(private_tracker, stop, poll=0.05, threads=8,
                                       sender=HttpSender(allow_private=True, timeout=60))
        try:
            add_rule(private_tracker, "us-fanout-rule")
            record(private_tracker, "us-fanout-rule", 4)
            wait_until(lambda: all(len(r.requests) == 5 for r in live), timeout=30,
                       what="every live endpoint getting every event")
            assert all(target.held for target in silent)  # tried, and still hanging
        finally:
            stop.set()
            for target in silent:
                target.stop()  # the hanging tries end now
            thread.join(timeout=30)
        assert not thread.is_alive()
        for receiver in live:
            assert sorted(int(json.loads(r.body)["sequence"]) for r in receiver.requests) == [1, 2, 3, 4, 5]
    finally:
        for target in silent:
            target.stop()


def test_a_receiver_refusing_every_first_try_gets_every_event(private_tracker, receiver_factory):
    receiver = receiver_factory()
    seen: set[bytes] = set()
    refused = []

    class FirstTryRefused:
        def __init__(self) -> None:
            self.real = HttpSender(allow_private=True, timeout=5)

        def send(self, url, body, headers):
            # The real receiver sees every try; this one refuses an event's first.
            result = self.real.send(url, body, headers)
            if body not in seen:
                seen.add(body)
                refused.append(body)
                return Result(500, "HTTP 500")
            return result

    WebhookStore(private_tracker.settings).register(receiver.url, None, 0)
    stop = threading.Event()
    thread = start_delivery_worker(private_tracker, stop, poll=0.05, threads=4,
                                   sender=FirstTryRefused(), schedule=(0.1,) * 9)
    try:
        add_rule(private_tracker, "us-refused-rule")
        record(private_tracker, "us-refused-rule", 9)
        wait_until(lambda: len(receiver.requests) == 20, timeout=30, what="every event twice")
    finally:
        stop.set()
        thread.join(timeout=30)
    positions = sorted(int(json.loads(r.body)["sequence"]) for r in receiver.requests)
    assert positions == sorted(list(range(1, 11)) * 2)


def test_backlog_counts_each_active_endpoints_unsettled_events(private_tracker):
    store = WebhookStore(private_tracker.settings)
    first = store.register("http://127.0.0.1:9/first", None, 0)[0].id
    second = store.register("http://127.0.0.1:9/second", None, 0)[0].id
    add_rule(private_tracker, "us-backlog-rule")
    record(private_tracker, "us-backlog-rule", 3)
    head = private_tracker.head()
    assert store.backlog(head) == {first: 4, second: 4}  # not looked at yet
    sender = Sender(lambda position, attempt: 204 if position >= 3 else 500)
    deliver_until_idle(DeliveryWorker(private_tracker, sender=sender, now=Clock()))
    assert store.backlog(head) == {first: 2, second: 2}  # 1 and 2 wait for their retries


def test_every_message_carries_its_sequence(private_tracker, receiver_factory):
    receiver = receiver_factory()
    WebhookStore(private_tracker.settings).register(receiver.url, None, 0)
    add_rule(private_tracker, "us-sequenced-rule")
    record(private_tracker, "us-sequenced-rule", 2)
    private_tracker.record_action("us-sequenced-rule", {"id": "a1", "kind": "ban", "effective": "2025",
                                                        "sources": SOURCE})
    private_tracker.correct_action("us-sequenced-rule", "a1", {"effective": "2026"}, "misdated")
    private_tracker.retract_action("us-sequenced-rule", "a1", "wrong rule")
    deliver_until_idle(DeliveryWorker(private_tracker))
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert len({body["type"] for body in bodies}) == 4
    assert sorted(int(body["sequence"]) for body in bodies) == list(range(1, 7))
    assert all(len(body["sequence"]) == 20 for body in bodies)
