"""The read models: caught up before every answer, crash-safe, and their timeline and search."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import date

import pytest

from timeline.config import Settings
from timeline.domain.dates import PolicyDate, parse_instant
from timeline.readmodel.projector import Projector
from timeline.service import Tracker
from timeline.writelock import RecordClock

from tests.listings import states

H200 = "us-h200-export-licensing-cn"
DAY = date(2025, 12, 9)
SOURCE = {"title": "Asia Times, December 2025"}


def test_a_write_through_one_tracker_is_seen_by_the_next_read_of_another(
    settings: Settings, loaded: Tracker,
):
    # Two trackers on one store stand for two processes (the server and the command line).
    other = Tracker(settings)
    try:
        assert other.state(H200, DAY)["rate_percent"] == 25
        loaded.correct_action(H200, "us-h200-fee-25-2025-12-08", {"rate_percent": 15}, "typo")
        assert other.state(H200, DAY)["rate_percent"] == 15
        other.retract_action(H200, "us-h200-eased-2025-12-08", "recorded in error")
        assert loaded.state(H200, DAY)["status"] == "restricted"
    finally:
        other.close()


def test_a_write_its_writer_did_not_project_is_projected_by_the_next_read_of_another(
    settings: Settings, loaded: Tracker,
):
    """A writer that stops between its commit and its projection (a crash, or a process whose
    read model is elsewhere) leaves the event to the next reader, even one that has just
    seen the read model caught up and would otherwise trust it."""
    other = Tracker(settings)
    try:
        assert other.state(H200, DAY)["rate_percent"] == 25
        with loaded.lock.hold():
            clock = RecordClock(loaded.app.last_recorded_at())
            loaded.app.record_action(H200, {"id": "fee-15", "kind": "fee", "rate_percent": 15,
                                            "effective": "2025-12-09", "sources": [SOURCE]}, clock)
        assert loaded.readmodel.position() < loaded.app.head()  # committed, not projected
        assert other.state(H200, DAY)["rate_percent"] == 15
    finally:
        other.close()


def test_a_failure_while_projecting_leaves_no_half_applied_batch(
    loaded: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    expected = states(loaded, DAY)
    position = loaded.readmodel.position()
    loaded.record_action(H200, {"id": "lift", "kind": "lift", "effective": "2026-01-01",
                                "sources": [SOURCE]})
    lifted = states(loaded, date(2026, 2, 1))
    loaded.readmodel.drop()
    calls = {"n": 0}
    original = Projector.apply

    def fail_on_the_fifth(self, conn, pos, event):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("power cut")
        return original(self, conn, pos, event)

    monkeypatch.setattr(Projector, "apply", fail_on_the_fifth)
    with pytest.raises(RuntimeError):
        loaded.catch_up()
    conn = loaded.readmodel.connection()
    assert loaded.readmodel.position() == 0
    assert conn.execute("SELECT COUNT(*) FROM rule_events").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM states").fetchone()[0] == 0

    monkeypatch.setattr(Projector, "apply", original)
    assert loaded.catch_up() == position + 1
    assert states(loaded, DAY, parse_instant(expected[0]["known_at"])) == expected
    assert states(loaded, date(2026, 2, 1), parse_instant(lifted[0]["known_at"])) == lifted


def test_a_read_model_from_another_store_is_started_again(settings: Settings, loaded: Tracker):
    loaded.close()
    if settings.on_postgres:  # the events are gone; the read model file is not
        import psycopg

        with psycopg.connect(autocommit=True, **settings.postgres_conninfo()) as conn:
            conn.execute("DROP TABLE timeline_events CASCADE")
    else:
        settings.sqlite_path.unlink()
    fresh = Tracker(settings)
    try:
        assert states(fresh, DAY) == []
        assert fresh.readmodel.position() == 0
    finally:
        fresh.close()


def test_a_read_model_of_an_earlier_layout_is_rebuilt_on_first_use(settings: Settings, loaded: Tracker):
    """An upgrade meets the read model of an earlier release: it is made again from the events."""
    expected = states(loaded, DAY)
    history = loaded.history(H200)[1]
    loaded.close()
    conn = sqlite3.connect(settings.readmodel_path)
    conn.executescript("""
        DROP TABLE states; DROP TABLE action_starts; DROP TABLE rule_events;
        CREATE TABLE rule_events (position INTEGER PRIMARY KEY, rule_id TEXT, version INTEGER,
            type TEXT, action_id TEXT, recorded_at TEXT, known_to TEXT, data TEXT);
        CREATE INDEX rule_events_by_rule ON rule_events (rule_id, recorded_at);
        DROP TABLE rules;
        CREATE TABLE rules (id TEXT PRIMARY KEY, title TEXT, jurisdiction TEXT, instrument TEXT,
            targets TEXT, subjects TEXT, tags TEXT, links TEXT, subjects_text TEXT,
            registered_at TEXT, position INTEGER);
        CREATE TABLE states (rule_id TEXT, valid_from TEXT, valid_to TEXT, known_from TEXT,
            known_to TEXT, status TEXT, rate_percent REAL, conditions TEXT, since TEXT,
            until TEXT, certain INTEGER, uncertain_because TEXT, based_on TEXT);
        UPDATE tracking SET position = 2 WHERE name = 'schema';
    """)
    conn.close()
    upgraded = Tracker(settings)
    try:
        assert without_known_at(states(upgraded, DAY)) == without_known_at(expected)
        assert upgraded.history(H200)[1] == history
        assert upgraded.readmodel.position() == upgraded.app.head()
    finally:
        upgraded.close()


def without_known_at(states: list[dict]) -> list[dict]:
    return [{k: v for k, v in state.items() if k != "known_at"} for state in states]


# The timeline of actions -------------------------------------------------------------------


def test_the_timeline_is_in_effective_order_then_record_order(loaded: Tracker):
    items, cursor = loaded.timeline(limit=1000)
    assert cursor is None
    starts = [(PolicyDate.parse(i["effective"]).start, i["position"]) for i in items]
    assert starts == sorted(starts)
    assert items[0]["id"] == "cn-rare-earth-embargo-jp-2010"
    assert items[-1]["rule_id"] == H200
    assert {"rule_id", "rule_title", "jurisdiction", "instrument", "targets", "recorded_at",
            "position", "corrected", "kind", "effective", "sources"} <= set(items[0])


def test_the_timeline_pages_without_gaps_or_repeats(loaded: Tracker):
    everything, _ = loaded.timeline(limit=1000)
    seen, cursor = [], None
    while True:
        page, cursor = loaded.timeline(limit=4, cursor=cursor)
        assert len(page) <= 4
        seen.extend(page)
        if cursor is None:
            break
    assert [i["id"] for i in seen] == [i["id"] for i in everything]


def test_the_timeline_filters(loaded: Tracker):
    december, _ = loaded.timeline(day_from="2025-12-01", day_to="2025-12-31")
    assert {i["id"] for i in december} == {
        "cn-h200-approvals-weighed-2025-12", "us-safe-chips-bill-introduced-2025-12-04",
        "us-h200-eased-2025-12-08", "us-h200-fee-25-2025-12-08",
        # Given only as 2025, these may have happened in December: their period overlaps it.
        "cn-gallium-germanium-general-licenses-2025", "cn-rare-earth-new-restrictions-2025",
        "cn-rare-earth-restrictions-paused-2025", "cn-us-soybean-purchases-resumed-2025",
        "us-fentanyl-tariff-20-2025",
    }
    by_rule, _ = loaded.timeline(rule=H200)
    assert [i["id"] for i in by_rule] == ["us-h200-restricted-2022", "us-h200-eased-2025-12-08",
                                          "us-h200-fee-25-2025-12-08"]
    tariffs, _ = loaded.timeline(instrument="import_tariff")
    assert {i["rule_id"] for i in tariffs} == {"us-fentanyl-tariff-cn"}
    japan_era, _ = loaded.timeline(jurisdiction="CN", day_to="2020-01-01")
    assert [i["id"] for i in japan_era] == ["cn-rare-earth-embargo-jp-2010"]


def test_corrections_move_and_retractions_remove_actions_in_the_timeline(loaded: Tracker):
    loaded.correct_action(H200, "us-h200-restricted-2022", {"effective": "2023"}, "later")
    loaded.retract_action(H200, "us-h200-fee-25-2025-12-08", "recorded in error")
    items, _ = loaded.timeline(rule=H200)
    assert [(i["id"], i["effective"], i["corrected"]) for i in items] == [
        ("us-h200-restricted-2022", "2023", True),
        ("us-h200-eased-2025-12-08", "2025-12-08", False),
    ]


# Text search -------------------------------------------------------------------------------


def found(tracker: Tracker, q: str) -> list[str]:
    return [state["rule"]["id"] for state in states(tracker, DAY, q=q)]


def test_search_finds_titles_subjects_and_summaries(loaded: Tracker):
    assert found(loaded, "Safe Chips") == ["us-safe-chips-bill"]  # title
    assert found(loaded, "soybeans") == ["cn-us-soybean-purchases"]  # title and subjects
    assert found(loaded, "gallium") == ["cn-gallium-germanium-export-licensing"]
    assert found(loaded, "Busan") == ["cn-fentanyl-precursor-export-controls",
                                      "us-fentanyl-tariff-cn"]  # summaries only
    assert found(loaded, "Blackwell") == [H200]  # a summary only


def test_search_is_forgiving_about_case_punctuation_and_word_endings(loaded: Tracker):
    assert found(loaded, "H-200") == found(loaded, "h200") == ["cn-h200-purchase-approvals", H200]
    assert "cn-rare-earth-export-restrictions" in found(loaded, "restriction")
    assert found(loaded, "embargo, Japan!") == ["cn-rare-earth-embargo-jp"]


@pytest.mark.parametrize("q", ['"', "AND", "NEAR(x y)", "*", "title:x", "\u00dcmlaut", "'; DROP"])
def test_search_syntax_in_a_query_is_text_not_a_command(loaded: Tracker, q: str):
    assert isinstance(found(loaded, q), list)
    items, _ = loaded.timeline(q=q)
    assert isinstance(items, list)


def test_a_retracted_action_is_no_longer_found(loaded: Tracker):
    assert found(loaded, "Blackwell") == [H200]
    loaded.retract_action(H200, "us-h200-eased-2025-12-08", "recorded in error")
    assert found(loaded, "Blackwell") == []
    items, _ = loaded.timeline(q="Blackwell")
    assert items == []


def test_concurrent_writers_keep_record_time_in_position_order(
    settings: Settings, tracker: Tracker,
):
    tracker.register_rule({"id": "rule-a", "title": "A", "jurisdiction": "US",
                           "instrument": "other", "targets": [], "subjects": [], "tags": [],
                           "links": []})
    trackers = [tracker, Tracker(settings), Tracker(settings)]
    errors: list[BaseException] = []

    def write(t: Tracker, writer: int) -> None:
        try:
            for n in range(8):
                written = t.record_action("rule-a", {
                    "id": f"w{writer}-{n}", "kind": "restrict", "effective": "2025",
                    "sources": [SOURCE]})
                # Each writer sees its own write at once, whoever else is writing (one rule
                # only, so its version is at least the write's position).
                assert t.state("rule-a", DAY)["version"] >= written.position
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(trackers[k % 3], k)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in trackers[1:]:
        other.close()
    assert errors == []
    records = [json.loads(line) for line in tracker.export()]
    assert len(records) == 1 + 6 * 8
    times = [r["recorded_at"] for r in records]
    assert times == sorted(set(times))
    assert tracker.state("rule-a", DAY)["version"] == 1 + 6 * 8


@pytest.mark.parametrize("sparse_below", [0, 10**9])
def test_a_search_of_the_timeline_finds_the_same_pages_whether_its_matches_are_few_or_many(
    loaded: Tracker, monkeypatch: pytest.MonkeyPatch, sparse_below: int,
):
    # Few matches are fetched and sorted, many are walked in order: the answer is one.
    from timeline.readmodel import queries

    everything, _ = loaded.timeline(limit=1000)
    expected = [i["id"] for i in everything
                if i["rule_id"] in found(loaded, "H200") or "H200" in i.get("summary", "")]
    monkeypatch.setattr(queries, "SPARSE_MATCHES", sparse_below)
    for newest_first in (False, True):
        seen, cursor = [], None
        while True:
            page, cursor = loaded.timeline(q="H200", limit=2, cursor=cursor,
                                           newest_first=newest_first)
            seen.extend(i["id"] for i in page)
            if cursor is None:
                break
        assert seen == (expected[::-1] if newest_first else expected)
    assert len(expected) >= 4


def test_each_row_type_has_its_tables_columns(tmp_path):
    """The projector's rows are written by column name: each row type is its table."""
    from timeline.readmodel.store import ROW_TYPES, ReadModel

    readmodel = ReadModel(tmp_path / "rm.sqlite")
    conn = readmodel.connection()
    for table, row in ROW_TYPES.items():
        columns = tuple(info[1] for info in conn.execute(f"PRAGMA table_info({table})"))
        assert set(row._fields) == set(columns), table
    readmodel.close()
