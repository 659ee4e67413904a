"""A rule's states over valid time, as the chart on its page reads them."""

from __future__ import annotations

import pytest

from timeline.domain.dates import parse_instant
from timeline.domain.errors import NotFound
from timeline.schemas import ActionSchema, RuleSchema
from timeline.service import Tracker

H200 = "us-h200-export-licensing-cn"
SOURCE = [{"title": "A report"}]


def test_segments_cover_all_time_in_order(loaded: Tracker) -> None:
    _, segments = loaded.state_segments(H200)
    assert segments[0]["valid_from"] == "0001-01-01"
    assert segments[-1]["valid_to"] == "9999-12-31"
    for before, after in zip(segments, segments[1:]):
        assert before["valid_to"] == after["valid_from"]
    eased = segments[-1]
    assert (eased["valid_from"], eased["status"], eased["rate_percent"]) == ("2025-12-08", "eased", 25.0)
    assert eased["conditions"] == ["Sales only to approved customers vetted by the US Commerce Department"]
    restricted = [s for s in segments if s["status"] == "restricted"]
    assert restricted[0]["valid_from"] == "2022-01-01" and not restricted[0]["certain"]
    assert restricted[-1]["valid_to"] == "2025-12-08" and restricted[-1]["certain"]


def test_segments_follow_record_time(tracker: Tracker) -> None:
    tracker.register_rule(RuleSchema().load({"id": "test-rule", "title": "Test", "jurisdiction": "US",
                                             "instrument": "export_control"}))
    restrict = {"kind": "restrict", "effective": "2024-03-01", "sources": SOURCE}
    tracker.record_action("test-rule", ActionSchema().load(restrict))
    then = parse_instant(tracker.known_at())
    lift = {"kind": "lift", "effective": "2025-06-01", "sources": SOURCE}
    tracker.record_action("test-rule", ActionSchema().load(lift))

    echoed, before = tracker.state_segments("test-rule", known_at=then)
    assert parse_instant(echoed) == then
    assert [s["status"] for s in before] == ["none", "restricted"]
    _, now = tracker.state_segments("test-rule")
    assert [s["status"] for s in now] == ["none", "restricted", "lifted"]
    assert now[1]["valid_to"] == "2025-06-01"


def test_segments_of_an_unknown_rule_are_not_found(loaded: Tracker) -> None:
    with pytest.raises(NotFound):
        loaded.state_segments("no-such-rule")
