"""The feed and webhook delivery on PostgreSQL, in a schema made for each test and dropped after.

Skipped when no PostgreSQL answers at 127.0.0.1:5432, unless TIMELINE_REQUIRE_POSTGRES=1 (as in
CI), where a missing server fails instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from timeline.config import Settings
from timeline.feed.delivery import DeliveryWorker
from timeline.feed.webhooks import WebhookStore
from timeline.service import Tracker

from feed_support import deliver_until_idle, make_app, record, register

pytestmark = pytest.mark.postgres
DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def _admin():
    import psycopg

    try:
        return psycopg.connect(DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("TIMELINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (TIMELINE_REQUIRE_POSTGRES=1) but: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")


@pytest.fixture
def pg_settings(tmp_path: Path):
    admin = _admin()
    schema = f"feed_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield Settings(
            home=tmp_path / "home",
            database_url=f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}",
            webhook_allow_private=True,
        )
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def pg_tracker(pg_settings: Settings):
    tracker = Tracker(pg_settings)
    yield tracker
    tracker.close()


def test_webhook_tables_live_in_the_stores_schema(pg_settings, pg_tracker):
    WebhookStore(pg_settings)
    admin = _admin()
    schema = pg_settings.eventsourcing_env()["POSTGRES_SCHEMA"]
    tables = {row[0] for row in admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )}
    admin.close()
    assert {"timeline_webhook_endpoints", "timeline_webhook_tries", "timeline_webhook_attempts",
            "timeline_webhook_failures"} <= tables


@pytest.mark.slow
def test_paging_while_threads_write_gives_every_event_once(pg_tracker):
    for n in range(3):
        register(pg_tracker, f"pg-rule-{n}")
    threads = [threading.Thread(target=record, args=(pg_tracker, f"pg-rule-{n}", 15)) for n in range(3)]
    client = make_app(pg_tracker).test_client()
    for thread in threads:
        thread.start()
    seen, after, finishing = [], 0, False
    while True:
        body = client.get(f"/api/v1/events?after={after}&limit=4").get_json()
        seen.extend(int(e["sequence"]) for e in body["events"])
        after = body["next_after"]
        if len(body["events"]) < 4:
            if finishing:
                break
            finishing = not any(t.is_alive() for t in threads)
    assert seen == sorted(set(seen))
    assert len(seen) == 48 == len(pg_tracker.events_after(0, 1000))


@pytest.mark.slow
def test_a_try_is_claimed_by_one_worker_only_and_the_cap_holds(pg_settings, pg_tracker,
                                                               receiver_factory):
    store = WebhookStore(pg_settings)
    endpoint, _ = store.register(receiver_factory().url, None, pg_tracker.head())
    register(pg_tracker, "pg-claimed-rule")
    now = time.time()
    deliveries = DeliveryWorker(pg_tracker, now=lambda: now)
    deliver_until_idle(deliveries)  # it has answered: more than one try may be in flight to it
    record(pg_tracker, "pg-claimed-rule", 5)
    deliveries.hand_out()
    results: list[list] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        results.append(store.claim(owner, now, now + 60, 10, 3))

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [t.position for taken in results for t in taken]
    assert len(claimed) == 3 == len(set(claimed))  # never more in flight than the cap, none twice


@pytest.mark.slow
def test_workers_deliver_each_event_once_and_resume_after_a_restart(
    pg_settings, pg_tracker, receiver_factory
):
    receiver = receiver_factory(script=[(500, {})])
    store = WebhookStore(pg_settings)
    endpoint, _ = store.register(receiver.url, None, pg_tracker.head())
    register(pg_tracker, "pg-hook-rule")
    record(pg_tracker, "pg-hook-rule", 9)

    clock = [time.time()]
    deliver_until_idle(DeliveryWorker(pg_tracker, now=lambda: clock[0]))
    assert len(receiver.requests) == 10 and store.get(endpoint.id).pending.attempts == 1

    restarted = Tracker(pg_settings)  # a second process's view of the same store
    try:
        clock[0] += 10
        workers = [DeliveryWorker(restarted, now=lambda: clock[0]) for _ in range(3)]
        threads = [threading.Thread(target=deliver_until_idle, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        restarted.close()
    positions = [int(json.loads(r.body)["sequence"]) for r in receiver.requests]
    assert positions == list(range(1, 11)) + [1]  # 1 was refused once, retried after the rest
    assert receiver.requests[0].header("webhook-id") == receiver.requests[10].header("webhook-id")
    assert store.get(endpoint.id).delivered_count == 10


def test_a_store_with_the_old_webhook_table_moves_to_the_new_one(pg_settings, pg_tracker,
                                                                  receiver_factory):
    from timeline.database import connect_store_database

    register(pg_tracker, "pg-old-rule")
    record(pg_tracker, "pg-old-rule", 2)
    receiver = receiver_factory()
    conn = connect_store_database(pg_settings)
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
        " delivered_through, pending_position, attempts, next_try_at)"
        " VALUES ('wh_old', %s, '[]', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0',"
        " '2025-01-01T00:00:00Z', 0, 1, 2, 1, 0)", (receiver.url,))
    conn.commit()
    conn.close()

    store = WebhookStore(pg_settings)
    [endpoint] = store.list()
    assert endpoint.id == "wh_old" and endpoint.pending.position == 2
    deliver_until_idle(DeliveryWorker(pg_tracker))
    assert sorted(int(json.loads(r.body)["sequence"]) for r in receiver.requests) == [2, 3]
