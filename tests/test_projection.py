"""The fast projector writes exactly the rows of folding every rule from scratch after every event.

The history comes from the benchmark's generator: busy rules with hundreds of actions, actions
recorded out of effective order, corrections (of dates, rates and summaries), retractions, and
dates to the day, month or year.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from reference_projector import ReferenceProjector, live_fold_actions

from timeline.application import ImportTransaction
from timeline.config import Settings
from timeline.domain.fold import segments, state_on
from timeline.events import RULE_REGISTERED
from timeline.readmodel.actions import known_actions
from timeline.readmodel import ReadModel, queries
from timeline.readmodel.build import build
from timeline.readmodel.projector import Projector
from timeline.service import Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from generate import HistoryGenerator  # noqa: E402

TABLES = {
    "rules": "SELECT * FROM rules ORDER BY id",
    "rule_events": "SELECT * FROM rule_events ORDER BY position",
    "states": "SELECT * FROM states ORDER BY rule_id, known_from, valid_from",
    "action_starts": "SELECT * FROM action_starts ORDER BY rule_id, known_from, action_id",
    "actions": "SELECT * FROM actions ORDER BY rule_id, id",
    "requests": "SELECT * FROM requests ORDER BY key",
    "rule_links": "SELECT * FROM rule_links ORDER BY linked_id, rule_id, relation",
}


def tables(readmodel: ReadModel) -> dict[str, list[tuple]]:
    conn = readmodel.connection()
    return {name: [tuple(row) for row in conn.execute(sql)] for name, sql in TABLES.items()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """A store holding a generated history, imported (and so projected) by the fast path."""
    home = tmp_path_factory.mktemp("history")
    generator = HistoryGenerator(actions=600, rules=20, seed=11)
    records = list(generator.records())
    tracker = Tracker(Settings(home=home / "store"))
    assert tracker.import_records(lambda: iter(records)) == len(records)
    reference = ReadModel(home / "reference.sqlite")
    ReferenceProjector(reference).catch_up(tracker.app.events_after)
    yield tracker, tables(reference), generator.counts
    reference.close()
    tracker.close()


def test_the_history_has_what_the_benchmark_promises(imported):
    _, expected, counts = imported
    assert counts.out_of_order > 0 and counts.corrected > 0 and counts.retracted > 0
    busiest = max(sum(1 for row in expected["actions"] if row[0] == rule) for rule, *_ in expected["rules"])
    assert busiest >= 60


def test_import_writes_the_reference_rows(imported):
    tracker, expected, _ = imported
    assert tables(tracker.readmodel) == expected


def test_rebuild_writes_the_reference_rows(imported):
    tracker, expected, _ = imported
    tracker.rebuild()
    assert tables(tracker.readmodel) == expected


def test_small_pages_and_a_tiny_cache_write_the_reference_rows(imported, tmp_path: Path):
    """Rules leave the cache and come back from their stored rows, mid-history."""
    tracker, expected, _ = imported
    readmodel = ReadModel(tmp_path / "small.sqlite")
    Projector(readmodel, cache_units=3).catch_up(tracker.app.events_after, batch=7)
    assert tables(readmodel) == expected
    readmodel.close()


@pytest.mark.parametrize("turn", [37, 3, 1500])
def test_two_projectors_taking_turns_write_the_reference_rows(imported, tmp_path: Path, turn: int):
    """Two processes keep one read model: each notices the other's pages and takes them into
    the rules it holds (or, after too many of them, forgets the rules)."""
    tracker, expected, _ = imported
    first = Projector(ReadModel(tmp_path / "shared.sqlite"))
    second = Projector(ReadModel(tmp_path / "shared.sqlite"))
    head = tracker.app.head()
    stop = 0
    while stop < head:
        for projector in (first, second):
            stop += turn
            projector.catch_up(lambda after, limit, stop=stop: tracker.app.events_after(after, min(limit, max(0, stop - after))))
    assert tables(first.readmodel) == expected
    first.readmodel.close()
    second.readmodel.close()


def test_answers_at_every_record_time_are_the_folds(imported):
    """Asked as known at any instant, a busy rule's state (what it rests on included) is the
    domain fold of the actions known then, and its chart's segments are the fold's too."""
    tracker, _, _ = imported
    conn = tracker.readmodel.connection()
    rule_id = conn.execute(
        "SELECT rule_id FROM rule_events GROUP BY rule_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT position, version, type, recorded_at FROM rule_events WHERE rule_id = ? "
        "AND type != ? ORDER BY position", (rule_id, RULE_REGISTERED)).fetchall()
    data = tracker.app.rule_event_data(rule_id, rows[-1]["version"])
    events = [{**row, "data": data[row["version"]]} for row in rows]
    days = ["1990-01-01", "2012-06-15", "2020-02-29", "2024-07-01", "2031-12-31", "2090-07-01"]
    for count in [*range(1, len(events), 5), len(events)]:
        known_at = events[count - 1]["recorded_at"]
        live = live_fold_actions(known_actions(events[:count]))
        for day in days:
            expected = state_on(live, date.fromisoformat(day))
            answer = queries.rule_state(conn, rule_id, day, known_at)
            assert {name: answer[name] for name in FOLD_FIELDS} == {
                **{name: getattr(expected, name) for name in FOLD_FIELDS},
                "conditions": list(expected.conditions),
                "uncertain_because": list(expected.uncertain_because),
                "based_on": list(expected.based_on),
            }
        charted = queries.state_segments(conn, rule_id, known_at)
        assert [(s["valid_from"], s["based_on"]) for s in charted] == [
            (_day(seg.valid_from), list(seg.state.based_on)) for seg in segments(live)]


FOLD_FIELDS = ("status", "rate_percent", "conditions", "since", "until", "certain",
               "uncertain_because", "based_on")


def _day(value: date) -> str:
    return queries.OPEN_START if value == date.min else value.isoformat()


def test_a_corrected_summary_is_searched_by_its_new_words_only(tracker: Tracker):
    tracker.register_rule({"id": "us-chip-rule", "title": "Chips", "jurisdiction": "US",
                           "instrument": "export_control", "targets": [], "subjects": [],
                           "tags": [], "links": []})
    tracker.record_action("us-chip-rule", {"id": "a1", "kind": "ban", "effective": "2025-01-02",
                                           "summary": "alpha licence", "sources": [{"title": "x"}]})
    tracker.correct_action("us-chip-rule", "a1", {"summary": "beta licence"}, "typo")
    assert [item["id"] for item in tracker.timeline(q="beta")[0]] == ["a1"]
    assert tracker.timeline(q="alpha")[0] == []
    assert tracker.state("us-chip-rule", datetime(2025, 3, 1, tzinfo=timezone.utc).date())["status"] == "banned"



def test_a_forked_child_does_not_share_the_parents_write_lock(tmp_path: Path):
    """The lock file beside a SQLite store stays open between holds; a forked child must take
    the lock for itself."""
    import fcntl
    import os

    tracker = Tracker(Settings(home=tmp_path / "forked"))
    with tracker.lock.hold():
        pass  # the lock file is open now, and the fork below copies it
    held_read, held_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child holds the lock until the parent has tried it, then leaves
        try:
            with tracker.lock.hold():
                os.write(held_write, b"held")
                os.read(done_read, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(held_read, 4) == b"held"
        blocked = False
        try:
            fcntl.flock(tracker.lock._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(tracker.lock._fd, fcntl.LOCK_UN)
        except BlockingIOError:
            blocked = True
    finally:
        os.write(done_write, b"x")
        os.waitpid(pid, 0)
        for fd in (held_read, held_write, done_read, done_write):
            os.close(fd)
        tracker.close()
    assert blocked


def test_events_by_rule_are_each_rules_events_together_in_version_order(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch):
    """The order a whole read model is built in, on SQLite and PostgreSQL, across pages."""
    records = list(HistoryGenerator(actions=120, rules=6, seed=3).records())
    tracker.import_records(lambda: iter(records))
    head = tracker.app.head()
    up_to = head - 10
    in_order = [(p, e) for p, e in tracker.app.events_after(0, head) if p <= up_to]
    monkeypatch.setattr("timeline.application.EVENTS_PAGE", 7)
    by_rule = list(tracker.app.events_by_rule(up_to))

    assert sorted(p for p, _ in by_rule) == [p for p, _ in in_order]
    keys = [(e.originator_id, e.originator_version) for _, e in by_rule]
    assert keys == sorted(keys)
    decoded = {p: (e.originator_id, e.originator_version, type(e), e.timestamp) for p, e in by_rule}
    assert decoded == {p: (e.originator_id, e.originator_version, type(e), e.timestamp)
                       for p, e in in_order}


def test_a_build_writes_the_reference_rows(imported, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    """Over many pages: no rule's rows are split between two of them."""
    from timeline.readmodel import projector

    monkeypatch.setattr(projector, "BUILD_PAGE", 50)
    tracker, expected, _ = imported
    readmodel = ReadModel(tmp_path / "built.sqlite")
    head = tracker.app.head()
    build(readmodel, tracker.app.events_by_rule(head), head)
    assert readmodel.position() == head
    assert tables(readmodel) == expected
    readmodel.close()


def searched(readmodel: ReadModel, words: set[str]) -> dict[str, tuple[list, list]]:
    """For each word, the rules and the actions a full-text search finds."""
    conn = readmodel.connection()
    return {word: (
        [row[0] for row in conn.execute(
            "SELECT r.id FROM rules_fts JOIN rules r ON r.rowid = rules_fts.rowid "
            "WHERE rules_fts MATCH ? ORDER BY r.id", (word,))],
        [tuple(row) for row in conn.execute(
            "SELECT a.rule_id, a.id FROM actions_fts JOIN actions a ON a.rowid = actions_fts.rowid "
            "WHERE actions_fts MATCH ? ORDER BY a.rule_id, a.id", (word,))],
    ) for word in sorted(words)}


def test_a_rebuild_indexes_every_row_for_search_and_keeps_indexing_after(
        imported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A rebuild fills its full-text indexes page by page: over many pages, every word finds
    what it finds in a read model kept row by row, the indexes agree with their tables, and a
    row written after the rebuild is found too. It commits with every index and trigger a read
    model kept row by row has."""
    from timeline.readmodel import projector
    from timeline.readmodel.store import ActionRow
    from timeline.readmodel.writer import PageRows, write_rows

    tracker, _, _ = imported
    head = tracker.app.head()
    kept = ReadModel(tmp_path / "kept.sqlite")
    Projector(kept).catch_up(tracker.app.events_after, batch=97)  # through the triggers
    conn = kept.connection()
    words = {word.strip(".,;:()'\"").lower()
             for (text,) in conn.execute("SELECT summary FROM actions UNION ALL "
                                         "SELECT title || ' ' || subjects_text FROM rules")
             for word in text.split()} - {""}
    assert len(words) > 20

    monkeypatch.setattr(projector, "BUILD_PAGE", 50)
    rebuilt = ReadModel(tmp_path / "rebuilt.sqlite")
    build(rebuilt, tracker.app.events_by_rule(head), head)
    assert searched(rebuilt, words) == searched(kept, words)
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"  # indexes and triggers
    assert rebuilt.connection().execute(schema).fetchall() == conn.execute(schema).fetchall()
    with rebuilt.write() as conn:
        for table in ("rules", "actions"):  # raises if an index and its table disagree
            conn.execute(f"INSERT INTO {table}_fts ({table}_fts, rank) VALUES ('integrity-check', 1)")
        rule_id = conn.execute("SELECT id FROM rules LIMIT 1").fetchone()[0]
        write_rows(conn, PageRows([], [], [], [], [], [], [ActionRow(
            rule_id=rule_id, id="a-late", kind="fee", effective="2031-01-01",
            effective_start="2031-01-01", effective_end="2031-01-01",
            summary="zanzibarian cloves", data="{}", jurisdiction="US",
            instrument="import_tariff", recorded_at="2031-01-01T00:00:00Z", position=head + 1,
            corrected=0, retracted=0,
        )], [], []))
    assert searched(rebuilt, {"zanzibarian"}) == {"zanzibarian": ([], [(rule_id, "a-late")])}
    kept.close()
    rebuilt.close()


def test_a_build_that_fails_midway_leaves_nothing_and_catching_up_makes_it(
        imported, tmp_path: Path):
    """A build is one transaction: cut short, the read model is as empty as before."""
    tracker, expected, _ = imported
    readmodel = ReadModel(tmp_path / "cut.sqlite")
    head = tracker.app.head()

    def cut_short():
        for n, item in enumerate(tracker.app.events_by_rule(head)):
            if n == head // 2:
                raise OSError("the store went away")
            yield item

    with pytest.raises(OSError):
        build(readmodel, cut_short(), head)
    assert readmodel.position() == 0
    assert all(rows == [] for rows in tables(readmodel).values())

    Projector(readmodel).catch_up(tracker.app.events_after)
    assert tables(readmodel) == expected
    readmodel.close()


def test_a_build_replaces_a_read_model_that_holds_rows(imported, tmp_path: Path):
    tracker, expected, _ = imported
    readmodel = ReadModel(tmp_path / "held.sqlite")
    first_five = tracker.app.events_after(0, 5)
    Projector(readmodel).catch_up(lambda after, limit: first_five if after == 0 else [])
    assert readmodel.position() == 5
    head = tracker.app.head()
    build(readmodel, tracker.app.events_by_rule(head), head)
    assert readmodel.position() == head
    assert tables(readmodel) == expected
    readmodel.close()


def test_a_rebuild_over_many_pages_writes_what_the_import_wrote(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch):
    """SQLite or PostgreSQL: the same rows as before, and every event counted once."""
    from timeline.readmodel import projector

    records = list(HistoryGenerator(actions=300, rules=12, seed=5).records())
    tracker.import_records(lambda: iter(records))
    before = tables(tracker.readmodel)
    monkeypatch.setattr(projector, "BUILD_PAGE", 40)
    monkeypatch.setattr("timeline.application.EVENTS_PAGE", 50)
    counted = []
    assert tracker.rebuild(progress=lambda _position, count: counted.append(count)) \
        == tracker.app.head()
    assert tables(tracker.readmodel) == before
    assert sum(counted) == len(records)


def test_an_import_over_many_pages_writes_the_reference_rows(
        tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The read model is built from the uncommitted events (SQLite or PostgreSQL), read a page
    at a time: the reference's rows."""
    from timeline import service
    from timeline.readmodel import projector

    records = list(HistoryGenerator(actions=300, rules=12, seed=5).records())
    monkeypatch.setattr(projector, "BUILD_PAGE", 40)
    monkeypatch.setattr(service, "IMPORT_PAGE", 70)
    monkeypatch.setattr("timeline.application.EVENTS_PAGE", 50)
    assert tracker.import_records(lambda: iter(records)) == len(records)
    reference = ReadModel(tmp_path / "reference.sqlite")
    ReferenceProjector(reference).catch_up(tracker.app.events_after)
    assert tables(tracker.readmodel) == tables(reference)
    reference.close()


def test_an_import_whose_read_model_build_fails_stores_nothing(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch):
    """Reading the uncommitted events back fails midway: the import keeps nothing."""
    from timeline.readmodel import projector

    records = list(HistoryGenerator(actions=300, rules=12, seed=5).records())
    monkeypatch.setattr(projector, "BUILD_PAGE", 40)
    events_by_rule = ImportTransaction.events_by_rule

    def breaks(self, up_to):
        for n, item in enumerate(events_by_rule(self, up_to)):
            if n == 100:
                raise OSError("the disk went away")
            yield item

    monkeypatch.setattr(ImportTransaction, "events_by_rule", breaks)
    with pytest.raises(OSError, match="the disk went away"):
        tracker.import_records(lambda: iter(records))
    assert tracker.app.head() == 0
    assert tracker.readmodel.position() == 0
    monkeypatch.undo()
    assert tracker.import_records(lambda: iter(records)) == len(records)


def test_a_rebuild_starts_no_process_and_an_import_only_its_check(
        imported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import multiprocessing.process

    _, expected, _ = imported
    records = list(HistoryGenerator(actions=600, rules=20, seed=11).records())  # as imported
    started = []
    start = multiprocessing.process.BaseProcess.start

    def recorded(process: multiprocessing.process.BaseProcess) -> None:
        started.append(process.name)
        start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", recorded)
    tracker = Tracker(Settings(home=tmp_path / "one"))
    assert tracker.import_records(lambda: iter(records)) == len(records)
    assert tables(tracker.readmodel) == expected
    assert started == ["timeline-import-check"]
    started.clear()
    assert tracker.rebuild() == tracker.app.head()
    assert tables(tracker.readmodel) == expected
    assert started == []
    tracker.close()


def test_a_build_whose_process_dies_leaves_the_read_model_free_and_empty(imported,
                                                                        tmp_path: Path):
    """A process that dies while building leaves the read model's write lock free, and the
    read model as it was."""
    import os
    import sqlite3

    tracker, _, _ = imported
    path = tmp_path / "orphan.sqlite"
    ReadModel(path).close()
    head = tracker.app.head()
    pid = os.fork()
    if pid == 0:  # builds, and dies without a word after writing some pages
        try:
            from timeline.readmodel import projector

            projector.BUILD_PAGE = 40

            def dies_midway():
                for n, item in enumerate(tracker.app.events_by_rule(head)):
                    if n == 300:
                        os._exit(3)
                    yield item
            build(ReadModel(path), dies_midway(), head)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    assert conn.execute("SELECT count(*) FROM rule_events").fetchone()[0] == 0
    conn.execute("ROLLBACK")
    conn.close()


def test_readers_see_the_old_read_model_until_a_rebuild_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The new read model replaces the old in one transaction: halfway through a rebuild,
    another connection still reads every row of the old one, search included; once it
    commits, the new one, search included (the new full-text index commits with it)."""
    from timeline.readmodel import projector

    tracker = Tracker(Settings(home=tmp_path / "store"))
    records = list(HistoryGenerator(actions=300, rules=12, seed=5).records())
    tracker.import_records(lambda: iter(records))
    before = tables(tracker.readmodel)
    other = ReadModel(tracker.settings.readmodel_path)
    summary = other.connection().execute(
        "SELECT summary FROM actions WHERE summary != '' LIMIT 1").fetchone()[0]
    word = "".join(ch for ch in summary.split()[0] if ch.isalnum())
    search = f"SELECT count(*) FROM actions_fts WHERE actions_fts MATCH '{word}'"
    searched = other.connection().execute(search).fetchone()[0]
    monkeypatch.setattr(projector, "BUILD_PAGE", 40)
    seen = []

    def look(_position, _count):
        found = other.connection().execute(search).fetchone()[0]
        seen.append((tables(other), other.position(), found))

    tracker.rebuild(progress=look)
    assert len(seen) > 2 and searched > 0
    assert all(seen_tables == before and position == tracker.app.head() and found == searched
               for seen_tables, position, found in seen)
    assert tables(other) == before
    other.close()
    tracker.close()
