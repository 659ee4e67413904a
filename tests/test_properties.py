"""Properties of the fold and the stores, checked on generated histories (hypothesis).

- recording the same actions (distinct effective dates) in any order gives the same
  valid-time states;
- an answer at known_at T never changes after more events are recorded;
- ``rebuild`` gives the same read model as the incremental path;
- export -> import -> export is byte-identical.

Examples are few and small so that the file runs in seconds; the stores are real (SQLite files).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timeline.config import Settings
from timeline.domain.dates import PolicyDate, parse_instant
from timeline.domain.errors import TimelineError
from timeline.domain.fold import Action, boundaries, segments, state_on
from timeline.domain.kinds import KINDS
from timeline.service import Tracker

from tests.listings import diff, states

FIRST_DAY = date(2020, 1, 1)
LAST_DAY = date(2026, 12, 31)
SOURCE = {"title": "Asia Times, December 2025"}
RULES = ("us-h200-export-licensing-cn", "us-fentanyl-tariff-cn")

# No deadline: these examples write real files, and a slow disk is not a failure.
STORE_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])


# Strategies -------------------------------------------------------------------------------

days = st.dates(min_value=FIRST_DAY, max_value=LAST_DAY)


@st.composite
def policy_dates(draw: Any, after: date | None = None) -> str:
    """A date as a source would give it: a year, a month or a day."""
    day = draw(days if after is None else st.dates(min_value=after, max_value=LAST_DAY))
    precision = draw(st.sampled_from(["year", "month", "day", "day"]))
    text = {"year": f"{day.year:04d}", "month": f"{day.year:04d}-{day.month:02d}",
            "day": day.isoformat()}[precision]
    if after is not None and PolicyDate.parse(text).start < after:
        text = day.isoformat()  # coarser than allowed: keep the day itself
    return text


@st.composite
def action_fields(draw: Any, id: str) -> dict[str, Any]:
    """A valid action of any kind."""
    kind = draw(st.sampled_from(KINDS))
    effective = draw(policy_dates())
    fields: dict[str, Any] = {"id": id, "kind": kind, "effective": effective,
                              "sources": [SOURCE]}
    if kind == "fee":
        fields["rate_percent"] = draw(st.sampled_from([0, 10, 20, 25, 12.5]))
    if kind == "pause" and draw(st.booleans()):
        start = PolicyDate.parse(effective).start + timedelta(days=1)
        if start <= LAST_DAY:
            fields["until"] = draw(policy_dates(after=start))
    if kind not in ("lift", "resume") and draw(st.booleans()):
        fields["conditions"] = draw(st.lists(st.sampled_from(["approved customers", "quota",
                                                              "licence"]), max_size=2))
    return fields


def fold_action(fields: dict[str, Any], order: int) -> Action:
    from timeline.domain.model import to_fold_action

    return to_fold_action(fields, order)


def distinct_start_actions(max_size: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(
        st.integers(0, 10_000).flatmap(lambda n: action_fields(f"a{n}")),
        min_size=1, max_size=max_size,
        unique_by=(lambda a: a["id"], lambda a: PolicyDate.parse(a["effective"]).start),
    )


def probe_days(actions: list[Action]) -> list[date]:
    """Every day the answer may change on, the day before each, and a few fixed ones."""
    result = {FIRST_DAY, date(2025, 12, 9), LAST_DAY}
    for day in boundaries(actions):
        result.add(day)
        if day > date.min:
            result.add(day - timedelta(days=1))
    return sorted(result)


# The pure fold ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(distinct_start_actions(max_size=7), st.randoms(use_true_random=False))
def test_record_order_does_not_change_valid_time_states_in_the_fold(actions, random):
    in_order = [fold_action(a, n) for n, a in enumerate(actions)]
    shuffled = list(actions)
    random.shuffle(shuffled)
    reordered = [fold_action(a, n) for n, a in enumerate(shuffled)]
    for day in probe_days(in_order):
        assert state_on(in_order, day) == state_on(reordered, day)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 10_000).flatmap(lambda n: action_fields(f"a{n}")), max_size=7,
                unique_by=lambda a: a["id"]),
       st.lists(days, min_size=1, max_size=10))
def test_the_stretches_of_valid_time_agree_with_the_fold_on_every_day(actions, asked):
    folded = [fold_action(a, n) for n, a in enumerate(actions)]
    parts = segments(folded)
    for day in [*asked, *probe_days(folded)]:
        (part,) = [p for p in parts if p.valid_from <= day < p.valid_to]
        assert part.state == state_on(folded, day)


# Through the stores ---------------------------------------------------------------------


@contextmanager
def fresh_tracker() -> Iterator[Tracker]:
    home = Path(tempfile.mkdtemp(prefix="timeline-prop-"))
    tracker = Tracker(Settings(home=home))
    try:
        yield tracker
    finally:
        tracker.close()
        shutil.rmtree(home, ignore_errors=True)


def register_rules(tracker: Tracker) -> None:
    for rule_id in RULES:
        tracker.register_rule({
            "id": rule_id, "title": rule_id.replace("-", " "), "jurisdiction": "US",
            "instrument": "export_control", "targets": ["CN"], "subjects": ["Nvidia H200"],
            "tags": [], "links": [],
        })


def valid_time_answers(tracker: Tracker, days_asked: list[date]) -> dict:
    """Every rule's state on each day, as known now, without the instant it was asked."""
    answers = {}
    for day in days_asked:
        for state in states(tracker, day):
            answers[(day, state["rule"]["id"])] = {k: v for k, v in state.items()
                                                   if k != "known_at"}
    return answers


@pytest.mark.slow
@STORE_SETTINGS
@given(distinct_start_actions(max_size=6), st.randoms(use_true_random=False))
def test_record_order_does_not_change_valid_time_states_in_the_store(actions, random):
    shuffled = list(actions)
    random.shuffle(shuffled)
    folded = [fold_action(a, n) for n, a in enumerate(actions)]
    asked = probe_days(folded)
    results = []
    for order in (actions, shuffled):
        with fresh_tracker() as tracker:
            register_rules(tracker)
            for fields in order:
                tracker.record_action(RULES[0], fields)
            results.append(valid_time_answers(tracker, asked))
    assert results[0] == results[1]


@st.composite
def histories(draw: Any) -> list[tuple]:
    """Writes on two rules: actions, corrections of any field, retractions (some invalid)."""
    steps: list[tuple] = []
    recorded: list[tuple[str, str]] = []
    for n in range(draw(st.integers(1, 8))):
        choice = draw(st.sampled_from(["record", "record", "record", "correct", "retract"]))
        if choice == "record" or not recorded:
            rule_id = draw(st.sampled_from(RULES))
            fields = draw(action_fields(f"a{n}"))
            # Some writes carry an Idempotency-Key: exports and imports must keep it.
            keyed = draw(st.booleans())
            request = {"key": f"key-{n}", "fingerprint": f"body-{n}"} if keyed else None
            steps.append(("record", rule_id, fields, request))
            recorded.append((rule_id, fields["id"]))
        elif choice == "correct":
            rule_id, action_id = draw(st.sampled_from(recorded))
            name = draw(st.sampled_from(["effective", "rate_percent", "until", "conditions",
                                         "summary"]))
            value = {
                "effective": draw(policy_dates()),
                "rate_percent": draw(st.sampled_from([0, 5, 30])),
                "until": draw(policy_dates()),
                "conditions": draw(st.lists(st.sampled_from(["quota", "licence"]), max_size=2)),
                "summary": "corrected",
            }[name]
            steps.append(("correct", rule_id, action_id, {name: value}))
        else:
            steps.append(("retract", rule_id := draw(st.sampled_from(recorded))[0],
                          draw(st.sampled_from([a for r, a in recorded if r == rule_id]))))
    return steps


def apply_step(tracker: Tracker, step: tuple) -> str | None:
    """Make one write; the record time it answered, or None if it was refused (nothing stored)."""
    head = tracker.app.head()
    try:
        if step[0] == "record":
            written = tracker.record_action(step[1], step[2], step[3])
        elif step[0] == "correct":
            written = tracker.correct_action(step[1], step[2], step[3], "a better source")
        else:
            written = tracker.retract_action(step[1], step[2], "recorded in error")
    except TimelineError:
        assert tracker.app.head() == head  # a refused write stores nothing
        return None
    return written.recorded_at


ASKED_DAYS = [date(2020, 1, 1), date(2022, 6, 30), date(2025, 1, 1), date(2025, 10, 15),
              date(2025, 12, 9), date(2026, 6, 1)]


def answers_at(tracker: Tracker, known_at: str) -> dict:
    instant = parse_instant(known_at)
    result: dict[Any, Any] = {}
    for day in ASKED_DAYS:
        for state in states(tracker, day, instant):
            result[(day, state["rule"]["id"])] = state
    for rule_id in RULES:
        result[("history", rule_id)] = tracker.history(rule_id, instant)
    result["diff"] = diff(tracker, ASKED_DAYS[2], ASKED_DAYS[4], instant)
    return result


@pytest.mark.slow
@STORE_SETTINGS
@given(histories())
def test_an_answer_at_known_at_never_changes_after_more_events(steps):
    with fresh_tracker() as tracker:
        register_rules(tracker)
        given_then: dict[str, dict] = {}
        for step in steps:
            recorded_at = apply_step(tracker, step)
            if recorded_at is not None:
                given_then[recorded_at] = answers_at(tracker, recorded_at)
        for known_at, answers in given_then.items():
            assert answers_at(tracker, known_at) == answers


def read_model_rows(tracker: Tracker) -> dict[str, list[tuple]]:
    """Every read-model table's rows, in a stable order, and the position reached."""
    conn = tracker.readmodel.connection()
    tables: dict[str, Any] = {"position": tracker.readmodel.position()}
    for table in ("rules", "rule_events", "states", "actions", "requests"):
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        tables[table] = sorted(tuple(row) for row in rows)
    return tables


@pytest.mark.slow
@STORE_SETTINGS
@given(histories())
def test_rebuild_equals_the_incremental_read_model(steps):
    with fresh_tracker() as tracker:
        register_rules(tracker)
        times = [t for t in (apply_step(tracker, step) for step in steps) if t is not None]
        incremental = read_model_rows(tracker)
        asked = {t: answers_at(tracker, t) for t in times}
        found = {word: search(tracker, word) for word in ("licence", "corrected", "h200")}
        tracker.rebuild()
        assert read_model_rows(tracker) == incremental
        assert {t: answers_at(tracker, t) for t in times} == asked
        assert {word: search(tracker, word) for word in found} == found


def search(tracker: Tracker, word: str) -> tuple[list[str], list[tuple[str, str]]]:
    """What text search finds: rules (by title, subjects, summaries) and timeline actions."""
    rules = [s["rule"]["id"] for s in states(tracker, date(2025, 12, 9), q=word)]
    items, _ = tracker.timeline(q=word, limit=1000)
    return rules, [(i["rule_id"], i["id"]) for i in items]


@pytest.mark.slow
@STORE_SETTINGS
@given(histories())
def test_export_import_export_is_byte_identical(steps):
    with fresh_tracker() as source:
        register_rules(source)
        times = [t for t in (apply_step(source, step) for step in steps) if t is not None]
        exported = "\n".join(source.export()) + "\n"
        asked = {t: answers_at(source, t) for t in times}
    with fresh_tracker() as target:
        records = [json.loads(line) for line in exported.splitlines()]
        assert target.import_records(lambda: iter(records)) == len(records)
        assert "\n".join(target.export()) + "\n" == exported
        assert {t: answers_at(target, t) for t in times} == asked
