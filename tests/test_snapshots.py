"""Writes to a long rule load a snapshot and the few events after it, and stay correct."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import project_aggregate

from timeline.application import SNAPSHOT_AFTER
from timeline.config import Settings
from timeline.domain.model import Rule
from timeline.service import Tracker
from timeline.writelock import RecordClock

RULE = "us-long-rule"
ACTIONS = 200
SOURCES = [{"title": "A notice"}]


def seed(tracker: Tracker, actions: int = ACTIONS) -> None:
    """A rule with many actions stored in one save, as an import leaves it: no snapshot."""
    fields = {"title": "A long rule", "jurisdiction": "US", "instrument": "export_control",
              "targets": ["CN"], "subjects": [], "tags": [], "links": []}
    with tracker.lock.hold():
        clock = RecordClock(tracker.app.last_recorded_at())
        rule = Rule.register(RULE, fields, clock.next())
        for i in range(actions):
            rule.record({"id": f"a-{i}", "kind": "ban" if i % 2 else "lift",
                         "effective": f"{1800 + i}-01-01", "summary": f"Action {i}.",
                         "sources": SOURCES}, clock.next())
        tracker.app.save(rule)
    tracker.catch_up()


class Reads:
    """Counts the stored events and snapshots a tracker's application reads."""

    def __init__(self, tracker: Tracker, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        for recorder in (tracker.app.recorder, tracker.app.snapshots.recorder):
            select = recorder.select_events

            def counted(*args: Any, _select: Any = select, **kwargs: Any) -> Any:
                found = _select(*args, **kwargs)
                self.count += len(found)
                return found

            monkeypatch.setattr(recorder, "select_events", counted)

    def during(self, write: Any) -> int:
        before = self.count
        write()
        return self.count - before


def replayed(tracker: Tracker) -> dict[str, Any]:
    """The rule made from every one of its events, no snapshot: what a load must equal."""
    rule = project_aggregate(None, tracker.app.events.get(RULE))
    return {k: v for k, v in vars(rule).items() if k != "_pending_events"}


def test_a_write_to_a_long_rule_reads_a_bounded_number_of_events(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    seed(tracker)
    reads = Reads(tracker, monkeypatch)
    action = {"kind": "fee", "effective": "2030-01-01", "rate_percent": 10, "sources": SOURCES}
    # The first write finds no snapshot: it reads the whole history, and leaves one.
    assert reads.during(lambda: tracker.record_action(RULE, {**action, "id": "f-0"})) > ACTIONS
    assert list(tracker.app.snapshots.get(RULE))
    writes = [
        lambda: tracker.record_action(RULE, {**action, "id": "f-1"}),
        lambda: tracker.correct_action(RULE, "a-7", {"effective": "1700"}, "an older notice"),
        lambda: tracker.retract_action(RULE, "a-8", "recorded in error"),
        lambda: tracker.record_action(RULE, {**action, "id": "f-2"}),
        # A repeat of a recorded action stores nothing, and still reads little.
        lambda: tracker.record_action(RULE, {**action, "id": "f-2"}),
    ]
    # The rule stays in memory as last saved: later writes read no stored event at all.
    for write in writes:
        assert reads.during(write) == 0
    # A rule loaded from a snapshot is the rule replayed from all its events.
    assert {k: v for k, v in vars(tracker.app.get_rule(RULE)).items()
            if k != "_pending_events"} == replayed(tracker)
    history = {item["id"]: item for item in tracker.history(RULE)[1]}
    assert history["a-7"]["effective"] == "1700" and history["a-8"]["retracted"]
    assert history["f-2"]["rate_percent"] == 10


def test_a_write_reads_only_what_other_processes_stored_since_its_own(
    settings: Settings, tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    # Another tracker on the same store stands for another process.
    seed(tracker)
    action = {"kind": "fee", "effective": "2030-01-01", "rate_percent": 10, "sources": SOURCES}
    tracker.record_action(RULE, {**action, "id": "f-0"})
    other = Tracker(settings)
    try:
        other.record_action(RULE, {**action, "id": "f-1"})
        other.retract_action(RULE, "a-3", "recorded in error")
        reads = Reads(tracker, monkeypatch)
        assert reads.during(lambda: tracker.record_action(RULE, {**action, "id": "f-2"})) == 2
    finally:
        other.close()
    assert {k: v for k, v in vars(tracker.app.get_rule(RULE)).items()
            if k != "_pending_events"} == replayed(tracker)
    assert [i["id"] for i in tracker.history(RULE)[1]][-3:] == ["f-0", "f-1", "f-2"]


def test_a_write_that_fails_to_save_leaves_nothing_in_memory(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    seed(tracker, 5)
    action = {"kind": "fee", "effective": "2030-01-01", "rate_percent": 10, "sources": SOURCES}
    tracker.record_action(RULE, {**action, "id": "f-0"})
    saved = tracker.app.save

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(tracker.app, "save", fails)
    with pytest.raises(OSError):
        tracker.record_action(RULE, {**action, "id": "f-1", "rate_percent": 20})
    monkeypatch.setattr(tracker.app, "save", saved)
    # The action the failed write had applied in memory is not there: recording it is new.
    assert tracker.record_action(RULE, {**action, "id": "f-1", "rate_percent": 30}).created
    assert {k: v for k, v in vars(tracker.app.get_rule(RULE)).items()
            if k != "_pending_events"} == replayed(tracker)
    assert tracker.state(RULE, date(2030, 12, 31))["rate_percent"] == 30


def test_a_repeat_or_a_conflict_is_told_apart_after_a_snapshot(tracker: Tracker):
    from timeline.domain.errors import Conflict

    seed(tracker, SNAPSHOT_AFTER + 5)
    first = tracker.record_action(RULE, {"id": "f", "kind": "fee", "effective": "2030",
                                         "rate_percent": 5, "sources": SOURCES})
    assert tracker.app.snapshots is not None and list(tracker.app.snapshots.get(RULE))
    again = tracker.record_action(RULE, {"id": "f", "kind": "fee", "effective": "2030",
                                         "rate_percent": 5, "sources": SOURCES})
    assert not again.created and again.position == first.position
    with pytest.raises(Conflict):
        tracker.record_action(RULE, {"id": "f", "kind": "fee", "effective": "2030",
                                     "rate_percent": 6, "sources": SOURCES})
    with pytest.raises(Conflict):  # a retracted action cannot be corrected, snapshot or not
        tracker.retract_action(RULE, "a-1", "wrong")
        tracker.correct_action(RULE, "a-1", {"effective": "1900"}, "too late")


def test_snapshots_stay_out_of_an_export_and_a_round_trip_is_identical(
    tracker: Tracker, tmp_path: Path,
):
    seed(tracker)
    for i in range(3):
        tracker.record_action(RULE, {"id": f"f-{i}", "kind": "fee", "effective": "2030",
                                     "rate_percent": i, "sources": SOURCES})
    assert list(tracker.app.snapshots.get(RULE))
    lines = list(tracker.export())
    assert len(lines) == tracker.app.head() == ACTIONS + 4
    assert not any("napshot" in line for line in lines)
    other = Tracker(Settings(home=tmp_path / "other"))
    try:
        other.import_records(lambda: (json.loads(line) for line in lines))
        assert list(other.export()) == lines
        # The imported rule has no snapshot yet: its writes are right all the same.
        other.record_action(RULE, {"id": "f-9", "kind": "fee", "effective": "2031",
                                   "rate_percent": 9, "sources": SOURCES})
        assert other.state(RULE, date(2030, 12, 31))["rate_percent"] == 2
        assert [i["id"] for i in other.history(RULE)[1]][-1] == "f-9"
    finally:
        other.close()


def test_two_trackers_taking_turns_on_a_long_rule_see_each_others_writes(
    settings: Settings, tracker: Tracker,
):
    # Two trackers on one store stand for two processes: each loads the other's snapshot and
    # the events after it.
    seed(tracker)
    other = Tracker(settings)
    try:
        for i in range(6):
            writer = (tracker, other)[i % 2]
            writer.record_action(RULE, {"id": f"f-{i}", "kind": "fee", "effective": f"{2030 + i}",
                                        "rate_percent": i, "sources": SOURCES})
        for reader in (tracker, other):
            assert {k: v for k, v in vars(reader.app.get_rule(RULE)).items()
                    if k != "_pending_events"} == replayed(tracker)
            assert [i["id"] for i in reader.history(RULE)[1]][-6:] == [f"f-{i}" for i in range(6)]
    finally:
        other.close()


def test_writes_stay_right_when_the_rules_in_memory_outgrow_their_room(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    import timeline.application as application

    monkeypatch.setattr(application, "RECENT_ACTIONS", 3)
    fields = {"title": "A rule", "jurisdiction": "US", "instrument": "export_control",
              "targets": ["CN"], "subjects": [], "tags": [], "links": []}
    rules = [f"rule-{i}" for i in range(3)]
    for rule_id in rules:
        tracker.register_rule({"id": rule_id, **fields})
    for day in range(1, 4):
        for rule_id in rules:
            tracker.record_action(rule_id, {"id": f"a-{day}", "kind": "fee", "rate_percent": day,
                                            "effective": f"2020-01-0{day}", "sources": SOURCES})
    # The oldest rules left memory: held there are at most 3 actions' worth.
    assert sum(len(rule.actions) for rule, _ in tracker.app._recent.values()) <= 3
    for rule_id in rules:
        assert tracker.state(rule_id, date(2020, 1, 3))["rate_percent"] == 3
        assert sorted(tracker.app.get_rule(rule_id).actions) == ["a-1", "a-2", "a-3"]


def test_a_rule_kept_in_memory_still_leaves_snapshots_for_other_processes(
    settings: Settings, tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    seed(tracker)
    action = {"kind": "fee", "effective": "2030-01-01", "rate_percent": 10, "sources": SOURCES}
    for i in range(SNAPSHOT_AFTER * 3):
        tracker.record_action(RULE, {**action, "id": f"f-{i}"})
    other = Tracker(settings)  # another process: its first write loads from a snapshot
    try:
        reads = Reads(other, monkeypatch)
        assert reads.during(lambda: other.record_action(RULE, {**action, "id": "g"})) \
            <= SNAPSHOT_AFTER + 1
    finally:
        other.close()
    assert {k: v for k, v in vars(tracker.app.get_rule(RULE)).items()
            if k != "_pending_events"} == replayed(tracker)
