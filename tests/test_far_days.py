"""The first and the last day a date can name still have an answer."""

from __future__ import annotations

from datetime import date

from timeline.service import Tracker

from tests.listings import diff, states

H200 = "us-h200-export-licensing-cn"


def test_the_last_day_is_answered_by_the_open_ended_state(loaded: Tracker) -> None:
    # 9999-12-31 also marks "open-ended" in the read model; the day itself must still answer.
    assert loaded.state(H200, date(9999, 12, 31))["status"] == "eased"
    assert len(states(loaded, date(9999, 12, 31))) == len(states(loaded, date(2025, 12, 9)))
    _, changes = diff(loaded, date(2025, 12, 9), date(9999, 12, 31))
    assert H200 not in {c["rule_id"] for c in changes}


def test_the_first_day_is_before_every_action(loaded: Tracker) -> None:
    assert loaded.state(H200, date(1, 1, 1))["status"] == "none"
