"""A bitemporal scenario in the style of Snodgrass's textbook example.

One rule, the US "fentanyl tariff" on Chinese goods. An action is recorded with the wrong
effective date, corrected twice; another action is recorded in error and retracted. For every
pair of (as_of, known_at) the tracker must give the answer it would have given at known_at,
using the record times the writes themselves returned.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from timeline.domain.dates import format_instant, parse_instant
from timeline.domain.errors import NotFound
from timeline.service import Tracker

from tests.listings import diff, states

RULE_ID = "us-fentanyl-tariff-cn"
SOURCE = {"title": "Asia Times, December 2025"}
US = 1e-6  # one microsecond, in seconds

# The days asked about, in valid time.
DAYS = ["2025-03-03", "2025-03-04", "2025-10-15", "2025-11-09", "2025-11-10", "2025-12-01",
        "2025-12-09"]


def write_scenario(tracker: Tracker) -> tuple[list[str], dict[int, dict[str, dict]]]:
    """Make the seven writes; return their record times and the answers seen right after each."""
    writes = [
        lambda: tracker.register_rule({
            "id": RULE_ID, "title": "US fentanyl tariff on Chinese goods", "jurisdiction": "US",
            "instrument": "import_tariff", "targets": ["CN"], "subjects": ["Chinese goods"],
            "tags": [], "links": [],
        }),
        # w1: the 20% tariff from 4 March 2025.
        lambda: tracker.record_action(RULE_ID, {
            "id": "tariff-20", "kind": "fee", "effective": "2025-03-04", "rate_percent": 20,
            "sources": [SOURCE]}),
        # w2: the cut to 10%, first recorded with the wrong effective date.
        lambda: tracker.record_action(RULE_ID, {
            "id": "tariff-10", "kind": "fee", "effective": "2025-12-01", "rate_percent": 10,
            "sources": [SOURCE]}),
        # w3: first correction: the article only says October.
        lambda: tracker.correct_action(RULE_ID, "tariff-10", {"effective": "2025-10"},
                                       "the article says it was halved in October"),
        # w4: second correction: the exact day became known.
        lambda: tracker.correct_action(RULE_ID, "tariff-10", {"effective": "2025-11-10"},
                                       "the executive order took effect on 10 November"),
        # w5: a lift recorded in error ...
        lambda: tracker.record_action(RULE_ID, {
            "id": "tariff-lifted", "kind": "lift", "effective": "2025-12-01",
            "sources": [SOURCE]}),
        # w6: ... and retracted.
        lambda: tracker.retract_action(RULE_ID, "tariff-lifted", "no such lift happened"),
    ]
    times: list[str] = []
    seen: dict[int, dict[str, dict]] = {}
    for n, write in enumerate(writes):
        written = write()
        assert written.created
        times.append(written.recorded_at)
        seen[n] = {day: ask(tracker, day, written.recorded_at) for day in DAYS}
    return times, seen


def ask(tracker: Tracker, day: str, known_at: str) -> dict[str, Any] | None:
    try:
        return tracker.state(RULE_ID, date.fromisoformat(day), parse_instant(known_at))
    except NotFound:
        return None


def shifted(instant: str, seconds: float) -> str:
    return format_instant(parse_instant(instant) + timedelta(seconds=seconds))


NONE = ("none", None, None, True, [])


def fee(rate: float, certain: bool = True, because: list[str] | None = None):
    return ("in_force", rate, "2025-03-04", certain, because or [])


LIFTED = ("lifted", None, "2025-12-01", True, [])

# What the tracker knew after each write, day by day: (status, rate, since, certain, because).
EXPECTED: dict[int, dict[str, tuple]] = {
    0: {day: NONE for day in DAYS},
    1: {"2025-03-03": NONE, **{day: fee(20) for day in DAYS[1:]}},
    2: {"2025-03-03": NONE, "2025-03-04": fee(20), "2025-10-15": fee(20), "2025-11-09": fee(20),
        "2025-11-10": fee(20), "2025-12-01": fee(10), "2025-12-09": fee(10)},
    3: {"2025-03-03": NONE, "2025-03-04": fee(20),
        "2025-10-15": fee(10, certain=False, because=["tariff-10"]),
        "2025-11-09": fee(10), "2025-11-10": fee(10), "2025-12-01": fee(10),
        "2025-12-09": fee(10)},
    4: {"2025-03-03": NONE, "2025-03-04": fee(20), "2025-10-15": fee(20), "2025-11-09": fee(20),
        "2025-11-10": fee(10), "2025-12-01": fee(10), "2025-12-09": fee(10)},
    5: {"2025-03-03": NONE, "2025-03-04": fee(20), "2025-10-15": fee(20), "2025-11-09": fee(20),
        "2025-11-10": fee(10), "2025-12-01": LIFTED, "2025-12-09": LIFTED},
}
EXPECTED[6] = EXPECTED[4]  # the retraction brings back what was known before the error


def summary(state: dict | None) -> tuple | None:
    if state is None:
        return None
    return (state["status"], state["rate_percent"], state["since"], state["certain"],
            state["uncertain_because"])


@pytest.fixture
def scenario(tracker: Tracker):
    times, seen = write_scenario(tracker)
    return tracker, times, seen


def test_every_answer_matches_what_was_known_at_each_record_time(scenario):
    tracker, times, _ = scenario
    for n, known_at in enumerate(times):
        for day in DAYS:
            state = ask(tracker, day, known_at)
            assert summary(state) == EXPECTED[n][day], (n, day)
            assert state["as_of"] == day
            assert state["known_at"] == known_at  # echoed verbatim, so it can be asked again
            assert state["version"] == n + 1


def test_answers_given_right_after_each_write_never_change_later(scenario):
    tracker, times, seen = scenario
    for n, known_at in enumerate(times):
        for day in DAYS:
            assert ask(tracker, day, known_at) == seen[n][day]


def test_known_at_is_inclusive_and_holds_until_the_next_record_time(scenario):
    tracker, times, _ = scenario
    for n, known_at in enumerate(times):
        before = shifted(known_at, -US)
        for day in DAYS:
            expected_before = EXPECTED[n - 1][day] if n else None
            assert summary(ask(tracker, day, before)) == expected_before, (n, day)
            if n + 1 < len(times):
                assert summary(ask(tracker, day, shifted(times[n + 1], -US))) == EXPECTED[n][day]


def test_a_rule_not_yet_registered_at_known_at_is_not_found(scenario):
    tracker, times, _ = scenario
    for instant in (shifted(times[0], -US), "2000-01-01T00:00:00Z", "0999-01-01T00:00:00Z"):
        with pytest.raises(NotFound):
            tracker.state(RULE_ID, date(2025, 12, 9), parse_instant(instant))
        assert states(tracker, date(2025, 12, 9), parse_instant(instant)) == []
        with pytest.raises(NotFound):
            tracker.history(RULE_ID, parse_instant(instant))


def test_without_known_at_the_answer_is_the_latest_and_echoes_the_instant_used(scenario):
    tracker, times, _ = scenario
    state = tracker.state(RULE_ID, date(2025, 12, 9))
    assert summary(state) == EXPECTED[6]["2025-12-09"]
    assert state["known_at"] > times[-1]
    again = tracker.state(RULE_ID, date(2025, 12, 9), parse_instant(state["known_at"]))
    assert again == state


def test_a_known_at_in_the_future_is_answered_as_of_now(scenario):
    tracker, times, _ = scenario
    state = tracker.state(RULE_ID, date(2025, 12, 9), parse_instant("9999-01-01T00:00:00Z"))
    assert times[-1] < state["known_at"] < "9999"
    assert summary(state) == EXPECTED[6]["2025-12-09"]


def test_history_at_each_known_at_shows_what_was_recorded_by_then(scenario):
    tracker, times, _ = scenario
    _, items = tracker.history(RULE_ID, parse_instant(times[1]))
    assert [i["id"] for i in items] == ["tariff-20"]

    _, items = tracker.history(RULE_ID, parse_instant(times[3]))
    tariff_10 = next(i for i in items if i["id"] == "tariff-10")
    assert tariff_10["effective"] == "2025-10"
    assert tariff_10["original"]["effective"] == "2025-12-01"
    assert [c["changes"] for c in tariff_10["corrections"]] == [{"effective": "2025-10"}]

    at, items = tracker.history(RULE_ID, parse_instant(times[6]))
    assert at == times[6]
    # Effective order, with the second correction applied; the retracted lift stays, marked.
    assert [(i["id"], i["effective"], i["retracted"]) for i in items] == [
        ("tariff-20", "2025-03-04", False),
        ("tariff-10", "2025-11-10", False),
        ("tariff-lifted", "2025-12-01", True),
    ]
    tariff_10 = items[1]
    assert [c["previous"] for c in tariff_10["corrections"]] == [
        {"effective": "2025-12-01"}, {"effective": "2025-10"},
    ]
    assert [c["recorded_at"] for c in tariff_10["corrections"]] == [times[3], times[4]]
    assert items[2]["retraction"]["recorded_at"] == times[6]


def test_diff_between_two_days_follows_known_at(scenario):
    tracker, times, _ = scenario
    at, changes = diff(tracker, date(2025, 9, 30), date(2025, 10, 31), parse_instant(times[3]))
    assert at == times[3]
    assert [(c["before"]["rate_percent"], c["after"]["rate_percent"]) for c in changes] == [
        (20, 10)]
    _, changes = diff(tracker, date(2025, 9, 30), date(2025, 10, 31), parse_instant(times[4]))
    assert changes == []


def test_the_same_question_from_a_rebuilt_read_model_gets_the_same_answer(scenario):
    tracker, times, seen = scenario
    tracker.rebuild()
    for n, known_at in enumerate(times):
        for day in DAYS:
            assert ask(tracker, day, known_at) == seen[n][day]



def test_the_last_day_of_the_calendar_is_a_day_like_any_other(scenario):
    tracker, times, _ = scenario
    for n, known_at in enumerate(times):
        state = ask(tracker, "9999-12-31", known_at)
        assert summary(state) == EXPECTED[n]["2025-12-09"], n
    assert len(states(tracker, date(9999, 12, 31))) == 1


# The known_at barrier ----------------------------------------------------------------------


def _write_paused(tracker: Tracker) -> tuple[Any, Any, Any, dict]:
    """Start a write in a thread and pause it between taking its record time and committing.

    Returns the thread, the event set once the record time is taken, the event that lets the
    write commit, and a dict that receives the write's answer (or its error).
    """
    import threading

    taken, commit, result = threading.Event(), threading.Event(), {}
    save = tracker.app.save

    def paused_save(*args: Any, **kwargs: Any) -> Any:
        taken.set()  # the event, with its record time, is made; nothing is stored yet
        assert commit.wait(30)
        return save(*args, **kwargs)

    tracker.app.save = paused_save

    def write() -> None:
        try:
            result["written"] = tracker.record_action(RULE_ID, {
                "id": "tariff-paused", "kind": "fee", "effective": "2025-12-05",
                "rate_percent": 30, "sources": [SOURCE]})
        except BaseException as exc:  # pragma: no cover - reported by the test
            result["error"] = exc

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert taken.wait(30)
    return writer, taken, commit, result


def test_a_reader_waits_for_a_writer_between_its_record_time_and_its_commit(scenario):
    """A write whose record time is taken but not committed may have a record time at or
    before the reader's ``known_at``: the reader must wait for it, then include it."""
    import threading

    tracker, times, _ = scenario
    writer, _, commit, result = _write_paused(tracker)
    answered, answer = threading.Event(), {}

    def read() -> None:
        try:
            answer["state"] = tracker.state(RULE_ID, date(2025, 12, 9))
        finally:
            answered.set()

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        assert not answered.wait(0.5), "answered while a write with an earlier record time was in flight"
    finally:
        commit.set()
        writer.join(30)
        reader.join(30)
    written = result["written"]
    state = answer["state"]
    assert written.recorded_at <= state["known_at"]
    assert state["rate_percent"] == 30
    # The same question asked again later gets the same answer.
    assert tracker.state(RULE_ID, date(2025, 12, 9), parse_instant(state["known_at"])) == state


def test_readers_in_the_writing_thread_and_together_do_not_wait(scenario):
    """The thread holding the write lock reads without waiting for itself, and readers do not
    keep each other out."""
    import threading

    tracker, times, _ = scenario
    done = threading.Event()

    def read_while_holding() -> None:
        with tracker.lock.hold():
            tracker.state(RULE_ID, date(2025, 12, 9))
        done.set()

    threading.Thread(target=read_while_holding, daemon=True).start()
    assert done.wait(10), "a thread holding the write lock waited for itself"

    barrier = threading.Barrier(4)
    states: list[dict] = []

    def read_many() -> None:
        barrier.wait()
        for _ in range(50):
            states.append(tracker.state(RULE_ID, date(2025, 12, 9)))

    readers = [threading.Thread(target=read_many) for _ in range(4)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(30)
    assert len(states) == 200 and all(s["rate_percent"] == 10 for s in states)
