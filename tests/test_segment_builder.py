"""The incremental segment builder answers exactly what the pure fold answers, after any change."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.domain.dates import PolicyDate
from timeline.domain.fold import Action, Segment, SegmentBuilder, segments
from timeline.domain.kinds import KINDS


def _text(day: date, precision: str) -> str:
    if precision == "year":
        return f"{day.year:04d}"
    if precision == "month":
        return f"{day.year:04d}-{day.month:02d}"
    return day.isoformat()


@st.composite
def actions(draw, order: int, after: date | None = None) -> Action:
    """An action; with ``after``, one whose day, as drawn, comes soon after that day."""
    kind = draw(st.sampled_from(KINDS))
    if after is None:
        day = date(2000, 1, 1) + timedelta(days=draw(st.integers(0, 3000)))
    else:  # a month or a year may still start before ``after``
        day = after + timedelta(days=draw(st.integers(1, 90)))
    effective = PolicyDate.parse(_text(day, draw(st.sampled_from(["day", "day", "month", "year"]))))
    until = None
    if kind == "pause" and draw(st.booleans()):
        end = effective.end + timedelta(days=draw(st.integers(1, 500)))
        text = _text(end, draw(st.sampled_from(["day", "month"])))
        if PolicyDate.parse(text).start > effective.start:
            until = PolicyDate.parse(text)
    rate = draw(st.sampled_from([0, 10, 25.5])) if kind == "fee" else None
    conditions = None
    if kind not in ("lift", "resume") and draw(st.booleans()):
        conditions = tuple(draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)))
    return Action(id=f"x{order}", kind=kind, effective=effective, order=order,
                  rate_percent=rate, until=until, conditions=conditions)


@st.composite
def histories(draw):
    """A sequence of changes: add an action, replace one (a correction), or drop one.

    Half of them add actions mostly in effective order, as most histories are recorded: each
    later than every boundary day before it, but for months and years that began earlier.
    """
    steps = []
    live: dict[str, Action] = {}
    in_order = draw(st.booleans())
    last_day = date(2000, 1, 1)
    for order in range(draw(st.integers(1, 40))):
        choice = draw(st.sampled_from(["add", "add", "add", "correct", "retract"]))
        if choice == "add" or not live:
            action = draw(actions(order, last_day if in_order else None))
            last_day = max(last_day, action.effective.end,
                           action.until.end if action.until is not None else last_day)
            live[action.id] = action
            steps.append((None, action))
        else:
            old = live[draw(st.sampled_from(sorted(live)))]
            if choice == "retract":
                del live[old.id]
                steps.append((old, None))
            else:
                new = draw(actions(old.order))
                new = Action(id=old.id, kind=old.kind if old.kind != "pause" else new.kind,
                             effective=new.effective, order=old.order,
                             rate_percent=new.rate_percent if new.kind == "fee" == old.kind else old.rate_percent,
                             until=old.until if old.kind == "pause" and new.kind == "pause" else None,
                             conditions=new.conditions)
                if new.kind == "pause" and new.until is not None and new.until.start <= new.effective.start:
                    new = Action(new.id, new.kind, new.effective, new.order, conditions=new.conditions)
                live[old.id] = new
                steps.append((old, new))
    return steps


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(histories())
def test_every_change_gives_the_segments_of_a_fresh_fold(steps):
    builder = SegmentBuilder()
    lean = SegmentBuilder(based_on=False)  # the projector's: what states rest on is kept apart
    live: dict[str, Action] = {}
    for removed, added in steps:
        before, lean_before = builder.segments(), lean.segments()
        unchanged = builder.change(removed, added)
        replaced, replacing = lean.change_tail(removed, added)
        lean_unchanged = len(lean_before) - len(replaced)
        if removed is not None:
            del live[removed.id]
        if added is not None:
            live[added.id] = added
        expected = segments(list(live.values()))
        assert builder.segments() == expected
        assert builder.segments()[:unchanged] == before[:unchanged]
        assert lean.segments() == [without_based_on(seg) for seg in expected]
        assert lean.segments()[:lean_unchanged] == lean_before[:lean_unchanged]
        assert replacing == lean.segments()[lean_unchanged:]


def without_based_on(seg: Segment) -> Segment:
    return seg._replace(state=seg.state._replace(based_on=()))


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(histories())
def test_building_at_once_equals_building_step_by_step(steps):
    live: dict[str, Action] = {}
    for removed, added in steps:
        if removed is not None:
            del live[removed.id]
        if added is not None:
            live[added.id] = added
    assert SegmentBuilder(live.values()).segments() == segments(list(live.values()))


def test_a_long_history_in_effective_order_keeps_every_segment():
    builder = SegmentBuilder()
    live = []
    for order in range(300):
        action = Action(id=f"f{order}", kind="fee", order=order, rate_percent=order % 7,
                        effective=PolicyDate.parse((date(2001, 1, 1) + timedelta(days=order)).isoformat()))
        builder.change(added=action)
        live.append(action)
    assert builder.segments() == segments(live)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(histories(), st.lists(st.sampled_from(["0001-01-01", "0001", "9999-12-31", "9999-12", "9999"]),
                              min_size=1, max_size=3))
def test_actions_on_the_first_and_last_days_give_what_the_fold_gives(steps, days):
    """The edges of representable time have rules of their own; the builder follows the fold."""
    builder = SegmentBuilder()
    lean = SegmentBuilder(based_on=False)
    live: dict[str, Action] = {}
    edge = [Action(id=f"edge{i}", kind="ban" if i % 2 else "fee", rate_percent=None if i % 2 else 5,
                   effective=PolicyDate.parse(day), order=1000 + i) for i, day in enumerate(days)]
    for removed, added in steps[:3] + [(None, action) for action in edge] + steps[3:] \
            + [(action, None) for action in edge]:
        builder.change(removed, added)
        lean.change(removed, added)
        if removed is not None:
            del live[removed.id]
        if added is not None:
            live[added.id] = added
        assert builder.segments() == segments(list(live.values()))
        assert lean.segments() == [without_based_on(seg) for seg in builder.segments()]
