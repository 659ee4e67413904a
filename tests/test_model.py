"""The Rule aggregate and its use cases: validation first, repeats, corrections, retractions.

The first half talks to the aggregate alone (no storage); the second goes through the
:class:`~timeline.service.Tracker`, as the API and CLI do, and looks at what a user would see.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.utils import get_topic, resolve_topic

from timeline.domain.errors import Conflict, InvalidInput, NotFound
from timeline.domain.kinds import CHECKED_FIELDS, CORRECTABLE, unchecked
from timeline.domain.model import CHECKED, RETRACTED, Rule
from timeline.service import Tracker

T0 = datetime(2025, 12, 9, 12, 0, tzinfo=timezone.utc)
SOURCE = {"title": "Asia Times, December 2025"}

RULE = {
    "title": "US export licensing of Nvidia H200 chips to China",
    "jurisdiction": "US",
    "instrument": "export_control",
    "targets": ["CN"],
    "subjects": ["Nvidia H200"],
    "tags": ["semiconductors"],
    "links": [],
}


def action(id: str, kind: str, effective: str, **fields: Any) -> dict[str, Any]:
    return {"id": id, "kind": kind, "effective": effective, "summary": "", "sources": [SOURCE],
            **fields}


@pytest.fixture
def rule() -> Rule:
    aggregate = Rule.register("us-h200-export-licensing-cn", RULE, T0)
    aggregate.collect_events()  # start from a saved aggregate: nothing pending
    return aggregate


def at(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


# The aggregate alone ----------------------------------------------------------------------


def test_each_kind_of_action_has_its_own_event(rule: Rule):
    expected = {
        "ban": Rule.Banned, "restrict": Rule.Restricted, "ease": Rule.Eased, "fee": Rule.FeeSet,
        "pause": Rule.Paused, "resume": Rule.Resumed, "lift": Rule.Lifted,
        "propose": Rule.Proposed,
    }
    for n, (kind, event_class) in enumerate(expected.items()):
        extra = {"rate_percent": 5} if kind == "fee" else {}
        assert rule.record(action(f"a{n}", kind, "2025-12-08", **extra), at(n)) is True
        (event,) = rule.collect_events()
        assert type(event) is event_class
        # The class's topic is stored with every event: it names the class where it always was.
        assert get_topic(event_class) == f"timeline.domain.model:Rule.{event_class.__name__}"
        assert resolve_topic(get_topic(event_class)) is event_class
        assert event.action["kind"] == kind
        assert event.timestamp == at(n)  # record time comes from the caller, never the client


INVALID_ACTIONS = [
    (action("x", "embargo", "2025"), "kind"),
    (action("x", "ban", "2025-13"), "effective"),
    (action("x", "ban", "December 2025"), "effective"),
    (action("x", "ban", "2025", announced="2025-02-30"), "announced"),
    (action("x", "ban", "2025", rate_percent=10), "rate_percent"),
    (action("x", "ease", "2025", rate_percent=0), "rate_percent"),
    (action("x", "fee", "2025"), "rate_percent"),
    (action("x", "fee", "2025", rate_percent=-1), "rate_percent"),
    (action("x", "fee", "2025", rate_percent=1000.5), "rate_percent"),
    (action("x", "ban", "2025", until="2026"), "until"),
    (action("x", "resume", "2025", until="2026"), "until"),
    (action("x", "pause", "2025-06-01", until="2025-06-01"), "until"),
    (action("x", "pause", "2025-06-01", until="2025-05-31"), "until"),
    (action("x", "pause", "2025-06", until="2025"), "until"),
    (action("x", "pause", "2025", until="2026-13"), "until"),
    (action("x", "lift", "2025", conditions=["none"]), "conditions"),
    (action("x", "resume", "2025", conditions=[]), "conditions"),
]


@pytest.mark.parametrize("fields, field", INVALID_ACTIONS)
def test_an_invalid_action_records_nothing(rule: Rule, fields: dict, field: str):
    with pytest.raises(InvalidInput) as raised:
        rule.record(fields, at(1))
    assert field in raised.value.errors
    assert rule.collect_events() == []
    assert rule.version == 1
    assert rule.actions == {}


@pytest.mark.parametrize("rate", [0, 0.5, 25, 1000])
def test_fee_rates_from_0_to_1000_are_accepted(rule: Rule, rate: float):
    assert rule.record(action("f", "fee", "2025", rate_percent=rate), at(1))


def test_a_pause_until_a_later_period_is_accepted(rule: Rule):
    assert rule.record(action("p", "pause", "2025", until="2025-06"), at(1))


def test_a_repeat_with_the_same_fields_records_nothing(rule: Rule):
    fields = action("e", "ease", "2025-12-08", conditions=["approved customers"])
    assert rule.record(fields, at(1)) is True
    rule.collect_events()
    assert rule.record(dict(fields), at(2)) is False
    assert rule.collect_events() == []
    assert rule.version == 2


def test_an_action_that_breaks_its_kind_is_invalid_even_when_its_id_is_taken(rule: Rule):
    rule.record(action("e", "ease", "2025-12-08"), at(1))
    rule.collect_events()
    with pytest.raises(InvalidInput) as raised:
        rule.record(action("e", "ease", "2025-12-08", rate_percent=5), at(2))
    assert raised.value.errors == {"rate_percent": "is only allowed on a fee"}
    assert rule.collect_events() == []


def test_the_same_id_with_other_fields_is_a_conflict(rule: Rule):
    rule.record(action("e", "ease", "2025-12-08"), at(1))
    rule.collect_events()
    with pytest.raises(Conflict) as raised:
        rule.record(action("e", "ease", "2025-12-09"), at(2))
    assert "id" in raised.value.errors
    assert rule.collect_events() == []
    assert unchecked(rule.actions["e"][CHECKED:])["effective"] == "2025-12-08"


CORRECTIONS = [
    ("effective", action("p", "pause", "2025-03-01", until="2025-09-01"), "2025-02"),
    ("announced", action("p", "pause", "2025-03-01", until="2025-09-01"), "2025-02-20"),
    ("until", action("p", "pause", "2025-03-01", until="2025-09-01"), "2026"),
    ("conditions", action("p", "pause", "2025-03-01", until="2025-09-01"), ["steel only"]),
    ("summary", action("p", "pause", "2025-03-01", until="2025-09-01"), "Paused for talks."),
    ("sources", action("p", "pause", "2025-03-01", until="2025-09-01"),
     [{"title": "Reuters", "url": "https://example.org/a"}]),
    ("rate_percent", action("f", "fee", "2025-03-01", rate_percent=20), 10),
]


@pytest.mark.parametrize("name, original, value", CORRECTIONS)
def test_each_correctable_field_can_be_corrected(rule: Rule, name: str, original: dict, value: Any):
    rule.record(original, at(1))
    rule.collect_events()
    rule.correct("c1", original["id"], {name: value}, "a better source", at(2))
    (event,) = rule.collect_events()
    assert isinstance(event, Rule.ActionCorrected)
    assert (event.action_id, event.changes, event.reason) == (original["id"], {name: value},
                                                               "a better source")
    if name in CHECKED_FIELDS:  # what the rule keeps to check later corrections
        kept = unchecked(rule.actions[original["id"]][CHECKED:])
        assert kept[name] == (value if name != "conditions" else [])


def test_the_correctable_fields_are_the_contracts():
    assert set(CORRECTABLE) == {"effective", "announced", "rate_percent", "until", "conditions",
                                "summary", "sources"}
    assert {name for name, _, _ in CORRECTIONS} == set(CORRECTABLE)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"kind": "ban"}, "kind"),
        ({"id": "other"}, "id"),
        ({"rate_percent": 10}, "rate_percent"),  # on a ban: only fees have a rate
        ({"until": "2026"}, "until"),  # on a ban: only pauses have an until
        ({"effective": "2025-13"}, "effective"),
        ({}, "_schema"),
    ],
)
def test_an_invalid_correction_records_nothing(rule: Rule, changes: dict, field: str):
    rule.record(action("b", "ban", "2025-03-01"), at(1))
    rule.collect_events()
    with pytest.raises(InvalidInput) as raised:
        rule.correct("c1", "b", changes, "why", at(2))
    assert field in raised.value.errors
    assert rule.collect_events() == []
    assert unchecked(rule.actions["b"][CHECKED:])["effective"] == "2025-03-01"


def test_a_correction_is_checked_against_the_whole_corrected_action(rule: Rule):
    rule.record(action("p", "pause", "2025-03-01", until="2025-09-01"), at(1))
    rule.collect_events()
    with pytest.raises(InvalidInput) as raised:
        rule.correct("c1", "p", {"effective": "2025-10-01"}, "later than thought", at(2))
    assert "until" in raised.value.errors
    with pytest.raises(InvalidInput):
        rule.correct("c1", "p", {"conditions": ["x"], "until": "2025-02"}, "why", at(2))
    assert rule.collect_events() == []


def test_a_fee_cannot_lose_its_rate_by_correction(rule: Rule):
    rule.record(action("f", "fee", "2025", rate_percent=20), at(1))
    rule.collect_events()
    with pytest.raises(InvalidInput) as raised:
        rule.correct("c1", "f", {"rate_percent": None}, "why", at(2))
    assert "rate_percent" in raised.value.errors


def test_retraction_marks_the_action_and_nothing_more_can_change_it(rule: Rule):
    rule.record(action("b", "ban", "2025-03-01"), at(1))
    rule.collect_events()
    rule.retract("r1", "b", "recorded on the wrong rule", at(2))
    (event,) = rule.collect_events()
    assert isinstance(event, Rule.ActionRetracted)
    assert (event.action_id, event.reason) == ("b", "recorded on the wrong rule")
    assert rule.actions["b"][RETRACTED] is True
    with pytest.raises(Conflict):
        rule.retract("r2", "b", "again", at(3))
    with pytest.raises(Conflict):
        rule.correct("c1", "b", {"summary": "x"}, "why", at(3))
    assert rule.collect_events() == []


def test_an_unknown_action_cannot_be_corrected_or_retracted(rule: Rule):
    with pytest.raises(NotFound):
        rule.correct("c1", "nope", {"summary": "x"}, "why", at(1))
    with pytest.raises(NotFound):
        rule.retract("r1", "nope", "why", at(1))
    assert rule.collect_events() == []


# Through the tracker ----------------------------------------------------------------------


def register(tracker: Tracker, rule_id: str = "us-h200-export-licensing-cn", **changes: Any):
    return tracker.register_rule({"id": rule_id, **RULE, **changes})


def day(text: str) -> date:
    return date.fromisoformat(text)


def test_register_answers_a_position_and_a_record_time(tracker: Tracker):
    written = register(tracker)
    assert written.created and written.position >= 1
    assert written.recorded_at.endswith("Z")
    state = tracker.state("us-h200-export-licensing-cn", day("2025-12-09"))
    assert state["rule"] == {"id": "us-h200-export-licensing-cn", **RULE}
    assert (state["status"], state["version"]) == ("none", 1)


def test_registering_again_with_identical_fields_records_nothing(tracker: Tracker):
    first = register(tracker)
    again = register(tracker)
    assert not again.created
    assert (again.position, again.recorded_at) == (first.position, first.recorded_at)
    assert tracker.app.head() == first.position


def test_registering_again_with_other_fields_is_a_conflict(tracker: Tracker):
    register(tracker)
    head = tracker.app.head()
    with pytest.raises(Conflict):
        register(tracker, title="Another title")
    assert tracker.app.head() == head


def test_a_link_must_name_a_registered_rule(tracker: Tracker):
    with pytest.raises(InvalidInput) as raised:
        register(tracker, "us-safe-chips-bill",
                 links=[{"rule": "us-h200-export-licensing-cn", "relation": "blocks"}])
    assert "links" in raised.value.errors
    assert tracker.app.head() == 0
    register(tracker)
    assert register(tracker, "us-safe-chips-bill",
                    links=[{"rule": "us-h200-export-licensing-cn", "relation": "blocks"}]).created


def test_actions_on_an_unknown_rule_are_not_found(tracker: Tracker):
    with pytest.raises(NotFound):
        tracker.record_action("nope-rule", action("b", "ban", "2025"))
    with pytest.raises(NotFound):
        tracker.state("nope-rule", day("2025-12-09"))
    assert tracker.app.head() == 0


@pytest.mark.parametrize("fields, field", INVALID_ACTIONS)
def test_an_invalid_action_stores_nothing(tracker: Tracker, fields: dict, field: str):
    register(tracker)
    head = tracker.app.head()
    with pytest.raises(InvalidInput):
        tracker.record_action("us-h200-export-licensing-cn", fields)
    assert tracker.app.head() == head
    _, items = tracker.history("us-h200-export-licensing-cn")
    assert items == []


def test_an_action_without_an_id_gets_one(tracker: Tracker):
    register(tracker)
    fields = action("x", "ban", "2025")
    del fields["id"]
    first = tracker.record_action("us-h200-export-licensing-cn", fields)
    second = tracker.record_action("us-h200-export-licensing-cn", fields)
    assert first.id != second.id  # without a client id, each request is a new action
    assert first.id.startswith("ban-")
    _, items = tracker.history("us-h200-export-licensing-cn")
    assert sorted(i["id"] for i in items) == sorted([first.id, second.id])


def test_repeating_an_action_answers_the_first_result(tracker: Tracker):
    register(tracker)
    fields = action("e", "ease", "2025-12-08")
    first = tracker.record_action("us-h200-export-licensing-cn", fields)
    again = tracker.record_action("us-h200-export-licensing-cn", fields)
    assert again.body() == first.body()
    assert not again.created
    with pytest.raises(Conflict):
        tracker.record_action("us-h200-export-licensing-cn", {**fields, "summary": "other"})
    assert tracker.app.head() == first.position


def test_write_answers_have_strictly_increasing_positions_and_record_times(tracker: Tracker):
    register(tracker)
    answers = [tracker.record_action("us-h200-export-licensing-cn",
                                     action(f"a{n}", "restrict", "2025")) for n in range(5)]
    positions = [a.position for a in answers]
    times = [a.recorded_at for a in answers]
    assert positions == sorted(set(positions))
    assert times == sorted(set(times))


H200 = "us-h200-export-licensing-cn"


def history_item(tracker: Tracker, action_id: str) -> dict:
    _, items = tracker.history(H200)
    return next(i for i in items if i["id"] == action_id)


def test_a_corrected_rate_changes_the_state_and_history_keeps_the_original(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("f", "fee", "2025-12-08", rate_percent=20))
    tracker.correct_action(H200, "f", {"rate_percent": 25}, "the article says 25%")
    assert tracker.state(H200, day("2025-12-09"))["rate_percent"] == 25
    item = history_item(tracker, "f")
    assert item["rate_percent"] == 25
    assert item["original"]["rate_percent"] == 20
    (correction,) = item["corrections"]
    assert correction["changes"] == {"rate_percent": 25}
    assert correction["previous"] == {"rate_percent": 20}
    assert correction["reason"] == "the article says 25%"


def test_a_corrected_effective_date_moves_the_action_in_valid_time(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("r", "restrict", "2022"))
    tracker.record_action(H200, action("e", "ease", "2025-12-08"))
    assert tracker.state(H200, day("2025-12-05"))["status"] == "restricted"
    tracker.correct_action(H200, "e", {"effective": "2025-12"}, "only the month is sure")
    state = tracker.state(H200, day("2025-12-05"))
    assert (state["status"], state["since"], state["certain"]) == ("eased", "2025-12", False)
    assert state["uncertain_because"] == ["e"]


def test_corrected_until_and_conditions_change_when_the_pause_ends_and_what_comes_back(
    tracker: Tracker,
):
    register(tracker)
    tracker.record_action(H200, action("r", "restrict", "2025-01-01", conditions=["licence"]))
    tracker.record_action(H200, action("p", "pause", "2025-03-01", until="2025-06-01"))
    assert tracker.state(H200, day("2025-07-01"))["status"] == "restricted"
    tracker.correct_action(H200, "p", {"until": "2025-09-01", "conditions": ["quota"]}, "why")
    assert tracker.state(H200, day("2025-07-01"))["status"] == "paused"
    state = tracker.state(H200, day("2025-09-01"))
    assert (state["status"], state["conditions"]) == ("restricted", ["quota"])


def test_until_can_be_cleared_by_correction(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("p", "pause", "2025-03-01", until="2025-06-01"))
    tracker.correct_action(H200, "p", {"until": None}, "no end date was announced")
    state = tracker.state(H200, day("2026-01-01"))
    assert (state["status"], state["until"]) == ("paused", None)
    assert "until" not in history_item(tracker, "p")


def test_corrected_announced_summary_and_sources_show_in_history(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("e", "ease", "2025-12-08", announced="2025-12"))
    new_sources = [{"title": "Commerce Department", "url": "https://example.org/notice"}]
    tracker.correct_action(H200, "e", {"announced": "2025-12-08"}, "announced the same day")
    tracker.correct_action(H200, "e", {"summary": "Eased.", "sources": new_sources}, "better")
    item = history_item(tracker, "e")
    assert item["announced"] == "2025-12-08"
    assert item["summary"] == "Eased."
    assert item["sources"] == new_sources
    assert item["original"]["announced"] == "2025-12"
    assert [c["reason"] for c in item["corrections"]] == ["announced the same day", "better"]


def test_a_retracted_action_no_longer_counts_but_stays_in_history(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("r", "restrict", "2022"))
    tracker.record_action(H200, action("b", "ban", "2025-09"))
    assert tracker.state(H200, day("2025-12-09"))["status"] == "banned"
    written = tracker.retract_action(H200, "b", "the ban was on the H20, not the H200")
    assert written.created
    state = tracker.state(H200, day("2025-12-09"))
    assert (state["status"], state["based_on"]) == ("restricted", ["r"])
    item = history_item(tracker, "b")
    assert item["retracted"] is True
    assert item["retraction"]["reason"] == "the ban was on the H20, not the H200"
    assert item["retraction"]["recorded_at"] == written.recorded_at


def test_invalid_corrections_and_retractions_store_nothing(tracker: Tracker):
    register(tracker)
    tracker.record_action(H200, action("b", "ban", "2025-09"))
    head = tracker.app.head()
    with pytest.raises(InvalidInput):
        tracker.correct_action(H200, "b", {"rate_percent": 5}, "why")
    with pytest.raises(NotFound):
        tracker.correct_action(H200, "missing", {"summary": "x"}, "why")
    with pytest.raises(NotFound):
        tracker.retract_action(H200, "missing", "why")
    with pytest.raises(NotFound):
        tracker.retract_action("no-such-rule", "b", "why")
    tracker.retract_action(H200, "b", "wrong")
    head = tracker.app.head()
    with pytest.raises(Conflict):
        tracker.retract_action(H200, "b", "again")
    with pytest.raises(Conflict):
        tracker.correct_action(H200, "b", {"summary": "x"}, "why")
    assert tracker.app.head() == head


def test_a_repeat_of_a_corrected_action_still_records_nothing(tracker: Tracker):
    # Loading a fixture again after a correction must not bring the old fields back.
    register(tracker)
    fields = action("f", "fee", "2025-12-08", rate_percent=20)
    tracker.record_action(H200, fields)
    tracker.correct_action(H200, "f", {"rate_percent": 25}, "why")
    head = tracker.app.head()
    assert not tracker.record_action(H200, fields).created
    assert tracker.app.head() == head
    assert tracker.state(H200, day("2025-12-09"))["rate_percent"] == 25
