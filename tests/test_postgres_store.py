"""The event store on PostgreSQL: concurrent writers, rolled-back transactions, export both ways."""

from __future__ import annotations

import json
import multiprocessing
from datetime import date
import threading
from pathlib import Path

import pytest

from tests.listings import states
from tests.pg import postgres_settings
from timeline.config import Settings
from timeline.fixtures import bundled_fixtures, load_fixtures
from timeline.service import Tracker

pytestmark = pytest.mark.postgres

SOURCE = [{"title": "Test source"}]


@pytest.fixture
def pg_settings(tmp_path: Path):
    yield from postgres_settings(tmp_path / "pg-home")


def _writer(settings: Settings, worker: int, count: int, acknowledged) -> None:
    try:
        _write(settings, worker, count, acknowledged)
    except BaseException as exc:  # tell the test why, rather than only an exit code
        import traceback

        acknowledged.put(("error", traceback.format_exc(), str(exc)))
        raise


def _write(settings: Settings, worker: int, count: int, acknowledged) -> None:
    tracker = Tracker(settings)
    try:
        for i in range(count):
            written = tracker.record_action(
                f"rule-{worker % 2}",
                {"id": f"w{worker}-{i}", "kind": "fee", "effective": f"2025-01-{i % 28 + 1:02d}",
                 "rate_percent": float(i), "sources": SOURCE},
            )
            acknowledged.put((written.id, written.position, written.recorded_at))
    finally:
        tracker.close()


def _rollbacks(settings: Settings, stop: threading.Event) -> int:
    """Transactions that take a notification id and roll back, leaving gaps in the positions."""
    import psycopg

    done = 0
    with psycopg.connect(**settings.postgres_conninfo()) as conn:
        while not stop.is_set():
            with conn.transaction(force_rollback=True):
                conn.execute(
                    "INSERT INTO timeline_events (originator_id, originator_version, topic, state) "
                    "VALUES (%s, 1, 'rolled.back', '\\x00')", (f"ghost-{done}",))
            done += 1
    return done


@pytest.mark.slow
def test_a_consumer_following_the_log_never_skips_an_event(pg_settings: Settings) -> None:
    setup = Tracker(pg_settings)
    for n in range(2):
        setup.register_rule({"id": f"rule-{n}", "title": f"Rule {n}", "jurisdiction": "US",
                             "instrument": "import_tariff", "targets": ["CN"], "subjects": [],
                             "tags": [], "links": []})
    start = setup.app.head()

    ctx = multiprocessing.get_context("spawn")
    acknowledged = ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(pg_settings, w, 15, acknowledged)) for w in range(4)]
    stop = threading.Event()
    rolled_back: list[int] = []
    ghosts = threading.Thread(
        target=lambda: rolled_back.append(_rollbacks(pg_settings, stop)), daemon=True)
    ghosts.start()
    for w in workers:
        w.start()

    seen: list[int] = []
    ids: list[str] = []
    position = start
    while len(ids) < 60:
        for pos, event in setup.app.events_after(position, 7):
            assert pos > position
            seen.append(pos)
            ids.append(event.action["id"])
            position = pos
        if not any(w.is_alive() for w in workers) and setup.app.head() == position:
            break
    for w in workers:
        w.join(60)
    if any(w.exitcode for w in workers):
        raise AssertionError([acknowledged.get(timeout=5) for _ in range(acknowledged.qsize())])
    stop.set()
    ghosts.join(10)

    assert rolled_back and rolled_back[0] > 0
    gaps = [b for a, b in zip(seen, seen[1:]) if b != a + 1]
    assert gaps, "rolled-back transactions should have left gaps in the positions"

    acked = sorted(acknowledged.get(timeout=5) for _ in range(60))
    errors = [a for a in acked if a[0] == "error"]
    assert not errors, errors
    assert sorted(ids) == sorted(a[0] for a in acked)
    assert len(set(ids)) == 60
    assert seen == sorted(seen)
    assert sorted(a[1] for a in acked) == seen
    # Record time grows strictly with position, so "known at T" is a prefix of the log.
    instants = [a[2] for a in sorted(acked, key=lambda a: a[1])]
    assert instants == sorted(instants) and len(set(instants)) == 60
    setup.close()


def test_export_moves_between_sqlite_and_postgresql_unchanged(tmp_path: Path, pg_settings: Settings) -> None:
    lite = Tracker(Settings(home=tmp_path / "lite"))
    load_fixtures(lite, bundled_fixtures())
    lite.correct_action("us-fentanyl-tariff-cn", "us-fentanyl-tariff-halved-10-2025-10",
                        {"effective": "2025-11"}, "reported date was wrong")
    first = list(lite.export())

    pg = Tracker(pg_settings)
    pg.import_records(lambda: (json.loads(line) for line in first))
    second = list(pg.export())
    assert second == first

    back = Tracker(Settings(home=tmp_path / "back"))
    back.import_records(lambda: (json.loads(line) for line in second))
    assert list(back.export()) == first
    for tracker in (pg, back):
        for day in ("2025-10-15", "2025-11-15", "2025-12-09"):
            got = states(tracker, date.fromisoformat(day))
            want = states(lite, date.fromisoformat(day))
            assert [{**s, "known_at": None} for s in got] == [{**s, "known_at": None} for s in want]
    for t in (lite, pg, back):
        t.close()


STARTER = """
import sys
from pathlib import Path
from timeline.config import Settings
from timeline.feed.webhooks import WebhookStore
from timeline.service import Tracker
from timeline.tokens import TokenStore
settings = Settings(home=Path(sys.argv[1]), database_url=sys.argv[2])
tracker = Tracker(settings)
TokenStore(settings).create("starter")
WebhookStore(settings)
tracker.close()
"""


@pytest.mark.slow
def test_processes_starting_together_on_a_new_schema_all_start(pg_settings: Settings, tmp_path: Path) -> None:
    """Schemas, tables and functions are created one process at a time, whoever comes first."""
    import subprocess
    import sys

    starters = [
        subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / f"host-{n}"),
                          str(pg_settings.database_url)], stderr=subprocess.PIPE, text=True)
        for n in range(6)
    ]
    failures = [p.communicate(timeout=120)[1] for p in starters]
    assert [p.returncode for p in starters] == [0] * 6, "\n".join(failures)


def test_a_token_is_still_checked_after_the_database_dropped_its_session(pg_settings: Settings) -> None:
    """A restart of PostgreSQL ends every session: the next write's token check opens a new one
    and keeps no closed connection behind."""
    import psycopg

    from timeline.tokens import TokenStore

    tokens = TokenStore(pg_settings)
    token = tokens.create("writer")
    assert tokens.check(token).name == "writer"
    session = tokens._checking().info.backend_pid
    with psycopg.connect(pg_settings.database_url.split("?")[0], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (session,))
    assert tokens.check(token).name == "writer"
    assert tokens._checking().info.backend_pid != session
    assert len(tokens._opened) == 1
    tokens.close()
