"""Export and import through the tracker: a faithful round trip, and a bad file stores nothing."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any, Callable

import pytest

from timeline.config import Settings
from timeline.domain.dates import parse_instant
from timeline.domain.errors import InvalidInput, StoreNotEmpty, TimelineError
from timeline.service import Tracker

from tests.listings import states

SOURCE = {"title": "Asia Times, December 2025"}


def rule(rule_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "title": rule_id.replace("-", " "), "jurisdiction": "US",
            "instrument": "export_control", "targets": ["CN"], "subjects": ["Nvidia H200"],
            "tags": [], "links": [], **extra}


def write_history(tracker: Tracker) -> None:
    tracker.register_rule(rule("us-h200-export-licensing-cn"))
    tracker.register_rule(rule("us-safe-chips-bill", instrument="legislation", links=[
        {"rule": "us-h200-export-licensing-cn", "relation": "blocks"}]))
    h200 = "us-h200-export-licensing-cn"
    tracker.record_action(h200, {"id": "restrict", "kind": "restrict", "effective": "2022",
                                 "summary": "Controls tightened.", "sources": [SOURCE]})
    tracker.record_action(h200, {"id": "ease", "kind": "ease", "effective": "2025-12-08",
                                 "conditions": ["approved customers"], "sources": [SOURCE]},
                          request={"key": "k-1", "fingerprint": "f-1"})
    tracker.record_action(h200, {"id": "fee", "kind": "fee", "effective": "2025-12-08",
                                 "rate_percent": 20, "sources": [SOURCE]})
    tracker.correct_action(h200, "fee", {"rate_percent": 25}, "the article says 25%")
    tracker.record_action(h200, {"id": "pause", "kind": "pause", "effective": "2026-01",
                                 "until": "2026-06", "sources": [SOURCE]})
    tracker.retract_action(h200, "pause", "no such pause")
    tracker.record_action("us-safe-chips-bill", {
        "id": "introduced", "kind": "propose", "effective": "2025-12-04",
        "summary": "Bill introduced \u201cSafe Chips\u201d.", "sources": [SOURCE]})


@pytest.fixture
def exported(tracker: Tracker) -> list[dict[str, Any]]:
    write_history(tracker)
    return [json.loads(line) for line in tracker.export()]


@pytest.fixture
def empty(tmp_path: Path):
    t = Tracker(Settings(home=tmp_path / "other"))
    yield t
    t.close()


def test_an_export_has_every_event_in_position_order_with_record_times(
    tracker: Tracker, exported: list[dict],
):
    assert len(exported) == tracker.app.head() == 9
    assert [r["type"] for r in exported[:3]] == [
        "timeline.rule.registered", "timeline.rule.registered", "timeline.action.recorded"]
    times = [r["recorded_at"] for r in exported]
    assert times == sorted(set(times))
    assert all(t.endswith("Z") and len(t) == len("2025-12-09T00:00:00.000000Z") for t in times)
    assert exported[3]["request"] == {"key": "k-1", "fingerprint": "f-1"}
    assert exported[5]["data"] == {"id": exported[5]["data"]["id"], "action_id": "fee",
                                   "reason": "the article says 25%",
                                   "changes": {"rate_percent": 25}}


def test_import_restores_every_answer_and_a_new_export_is_identical(
    tracker: Tracker, exported: list[dict], empty: Tracker,
):
    assert empty.import_records(lambda: iter(exported)) == len(exported)
    assert list(empty.export()) == list(tracker.export())
    for record in exported:
        at = parse_instant(record["recorded_at"])
        for day in (date(2025, 12, 1), date(2025, 12, 9), date(2026, 3, 1)):
            assert states(empty, day, at) == states(tracker, day, at)
    assert empty.history("us-h200-export-licensing-cn")[1] == tracker.history(
        "us-h200-export-licensing-cn")[1]


def test_an_import_keeps_idempotency_keys_working(exported: list[dict], empty: Tracker):
    empty.import_records(lambda: iter(exported))
    again = empty.record_action(
        "us-h200-export-licensing-cn",
        {"id": "ease", "kind": "ease", "effective": "2025-12-08",
         "conditions": ["approved customers"], "sources": [SOURCE]},
        request={"key": "k-1", "fingerprint": "f-1"})
    assert not again.created
    assert again.position == 4


def test_import_refuses_a_store_that_is_not_empty(tracker: Tracker, exported: list[dict]):
    head = tracker.app.head()
    with pytest.raises(StoreNotEmpty):
        tracker.import_records(lambda: iter(exported))
    assert tracker.app.head() == head


def edit(records: list[dict], line: int, change: Callable[[dict], Any]) -> list[dict]:
    changed = copy.deepcopy(records)
    change(changed[line - 1])
    return changed


def dropped(records: list[dict], line: int) -> list[dict]:
    return records[: line - 1] + records[line:]


def append(records: list[dict], **fields: Any) -> list[dict]:
    last = records[-1]["recorded_at"]
    version = sum(1 for r in records if r["rule_id"] == fields["rule_id"]) + 1
    return records + [{"version": version, "recorded_at": last[:-2] + "9Z", **fields}]


# (what is wrong, how to break a good export, the line named)
BROKEN = [
    ("data is not an object", lambda r: edit(r, 3, lambda e: e.update(data=5)), 3),
    ("an unknown field", lambda r: edit(r, 3, lambda e: e.update(extra=1)), 3),
    ("an unknown type", lambda r: edit(r, 3, lambda e: e.update(type="timeline.x")), 3),
    ("an unknown kind", lambda r: edit(r, 3, lambda e: e["data"].update(kind="embargo")), 3),
    ("a record time that is not one",
     lambda r: edit(r, 3, lambda e: e.update(recorded_at="yesterday")), 3),
    ("record times out of order", lambda r: r[:2] + [r[3], r[2]] + r[4:], 3),
    ("an action before its rule", lambda r: dropped(r, 1), 1),
    ("a missing event", lambda r: dropped(r, 4), 4),
    ("a rule registered twice",
     lambda r: append(r, type="timeline.rule.registered", rule_id="us-safe-chips-bill",
                      data=r[1]["data"]), 10),
    ("a registration under another id",
     lambda r: edit(r, 1, lambda e: e["data"].update(id="another-rule")), 1),
    ("a registration the API would refuse",
     lambda r: edit(r, 1, lambda e: e["data"].update(jurisdiction="XX")), 1),
    ("a link to a rule not yet registered", lambda r: [r[1], r[0], *r[2:]], 1),
    ("an action the API would refuse",
     lambda r: edit(r, 3, lambda e: e["data"].update(rate_percent=5)), 3),
    ("an action with an unknown field",
     lambda r: edit(r, 3, lambda e: e["data"].update(colour="red")), 3),
    ("the same action twice",
     lambda r: append(r, type="timeline.action.recorded", rule_id="us-h200-export-licensing-cn",
                      data=r[2]["data"]), 10),
    ("a correction of no action",
     lambda r: edit(r, 6, lambda e: e["data"].update(action_id="nope")), 6),
    ("a correction that breaks the action",
     lambda r: edit(r, 6, lambda e: e["data"].update(changes={"until": "2027"})), 6),
    ("a correction without a reason",
     lambda r: edit(r, 6, lambda e: e["data"].update(reason="")), 6),
    ("a correction of a field that cannot be corrected",
     lambda r: edit(r, 6, lambda e: e["data"]["changes"].update(kind="ban")), 6),
    ("a version that is not a whole number",
     lambda r: edit(r, 3, lambda e: e.update(version=2.0)), 3),
    ("a correction with an extra field",
     lambda r: edit(r, 6, lambda e: e["data"].update(note="x")), 6),
    ("a retraction retracted again",
     lambda r: append(r, type="timeline.action.retracted", rule_id="us-h200-export-licensing-cn",
                      data={**r[7]["data"], "id": "retraction-2"}), 10),
    ("a correction after a retraction",
     lambda r: append(r, type="timeline.action.corrected", rule_id="us-h200-export-licensing-cn",
                      data={"id": "c-9", "action_id": "pause", "reason": "x",
                            "changes": {"summary": "x"}}), 10),
    ("a request that is not an object",
     lambda r: edit(r, 4, lambda e: e.update(request=["k-1"])), 4),
]


@pytest.mark.parametrize("what, breaks, line", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_export_is_refused_naming_the_line_and_stores_nothing(
    exported: list[dict], empty: Tracker, what: str, breaks: Callable, line: int,
):
    records = breaks(exported)
    with pytest.raises(InvalidInput) as raised:
        empty.import_records(lambda: iter(records))
    assert raised.value.detail.startswith(f"line {line}:"), raised.value.detail
    assert empty.app.head() == 0
    assert states(empty, date(2025, 12, 9)) == []
    # The store is still empty and usable: the good export goes in afterwards.
    assert empty.import_records(lambda: iter(exported)) == len(exported)


@pytest.fixture
def history(tmp_path: Path) -> list[dict[str, Any]]:
    """An export written by a SQLite store of its own, to import into the store under test."""
    source = Tracker(Settings(home=tmp_path / "source"))
    write_history(source)
    records = [json.loads(line) for line in source.export()]
    source.close()
    return records


def test_an_import_whose_storing_fails_midway_stores_nothing(
    tracker: Tracker, history: list[dict], monkeypatch: pytest.MonkeyPatch,
):
    """Pages already written go with the rest: the store is one transaction (both stores)."""
    from timeline import service

    calls = []

    def fails_at_the_seventh(record):
        calls.append(record)
        if len(calls) == 7:
            raise OSError("the disk went away")
        return fails_at_the_seventh.__wrapped__(record)

    fails_at_the_seventh.__wrapped__ = service.from_record
    monkeypatch.setattr(service, "IMPORT_PAGE", 2)
    monkeypatch.setattr(service, "from_record", fails_at_the_seventh)
    with pytest.raises(OSError, match="the disk went away"):
        tracker.import_records(lambda: iter(history))
    assert tracker.app.head() == 0
    assert states(tracker, date(2025, 12, 9)) == []

    monkeypatch.undo()
    assert tracker.import_records(lambda: iter(history)) == len(history)
    assert len(list(tracker.export())) == len(history)  # PostgreSQL may leave a gap before them


def test_an_import_whose_check_stops_stores_nothing(
    tracker: Tracker, history: list[dict], monkeypatch: pytest.MonkeyPatch,
):
    """The check runs in a process of its own: if it dies, nothing commits."""
    import os

    from timeline import import_check

    monkeypatch.setattr(import_check, "check_export", lambda records: os._exit(3))
    with pytest.raises(TimelineError, match=r"check stopped \(exit code 3\); nothing was stored"):
        tracker.import_records(lambda: iter(history))
    assert tracker.app.head() == 0
    assert states(tracker, date(2025, 12, 9)) == []
    monkeypatch.undo()
    assert tracker.import_records(lambda: iter(history)) == len(history)


def test_a_finding_keeps_its_fields_across_processes(exported: list[dict], empty: Tracker):
    """What the check finds reaches the caller whole: the line and the field it names."""
    records = [dict(r) for r in exported]
    records[2] = {**records[2], "data": {**records[2]["data"], "effective": "2025-13-01"}}
    with pytest.raises(InvalidInput) as raised:
        empty.import_records(lambda: iter(records))
    assert raised.value.detail.startswith("line 3:")
    assert raised.value.errors and any("effective" in key for key in raised.value.errors)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_slow_read_model_build_keeps_the_postgres_transaction_open(
    tmp_path: Path, history: list[dict], monkeypatch: pytest.MonkeyPatch,
):
    """The events wait, uncommitted, while the read model is built: longer than the server lets
    a session idle in a transaction (5 s), and still committed."""
    import time

    from pg import postgres_settings

    from timeline import service

    build = service.build

    def slowly(*args, **kwargs):
        time.sleep(6)
        return build(*args, **kwargs)

    monkeypatch.setattr(service, "build", slowly)
    for settings in postgres_settings(tmp_path / "pg"):
        tracker = Tracker(settings)
        try:
            assert tracker.import_records(lambda: iter(history)) == len(history)
            assert tracker.app.head() == len(history)
        finally:
            tracker.close()


def test_a_finding_after_pages_are_written_still_stores_nothing(
    tracker: Tracker, history: list[dict], monkeypatch: pytest.MonkeyPatch,
):
    """The last line is wrong, after the pages before it were written: they roll back."""
    from timeline import service

    monkeypatch.setattr(service, "IMPORT_PAGE", 2)
    records = history[:-1] + [{**history[-1], "recorded_at": history[0]["recorded_at"]}]
    with pytest.raises(InvalidInput, match=f"line {len(history)}: record times must increase"):
        tracker.import_records(lambda: iter(records))
    assert tracker.app.head() == 0
