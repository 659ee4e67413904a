"""The pure fold from a rule's actions to its state on a day.

Everything here is a function of its arguments: no clock, no storage. The read models store what
these functions return; the tests check them against the contract's table row by row.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Iterable, NamedTuple, Sequence

from timeline.domain.dates import DAY, PolicyDate
from timeline.domain.kinds import BY_NAME

_ONE_DAY = timedelta(days=1)
STATUSES = ("none", "proposed", "restricted", "banned", "eased", "in_force", "paused", "lifted")

# Makes a named tuple of this module from a tuple of all its fields without a call to its
# __new__, which is Python code: the fold makes several for every action it applies.
_make_tuple = tuple.__new__


class Action(NamedTuple):
    """One action as the fold needs it: corrections already applied, retractions dropped (a
    named tuple: every action projected makes one)."""

    id: str
    kind: str
    effective: PolicyDate
    order: int  # record order of the original action; breaks ties between equal start days
    rate_percent: float | None = None
    until: PolicyDate | None = None
    conditions: tuple[str, ...] | None = None  # None: not given, keep the current ones

    @property
    def sort_key(self) -> tuple[date, int]:
        return (self.effective.start, self.order)


class State(NamedTuple):
    """A rule's state on a day (a named tuple: folding makes one for every boundary day)."""

    status: str = "none"
    rate_percent: float | None = None
    conditions: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    certain: bool = True
    uncertain_because: tuple[str, ...] = ()
    based_on: tuple[str, ...] = ()


@dataclass(slots=True)
class _Underlying:
    """What a pause suspends and gives back when it ends."""

    status: str
    rate_percent: float | None
    conditions: tuple[str, ...]


@dataclass(slots=True)
class Fold:
    """Where the fold stands after the actions applied so far (each kind's effect, in kinds.py,
    changes it)."""

    status: str = "none"
    rate_percent: float | None = None
    conditions: tuple[str, ...] = ()
    since: str | None = None
    pause: Action | None = None
    until: PolicyDate | None = None
    underlying: _Underlying | None = None
    expired: list[Action] = field(default_factory=list)  # pauses that ended on their until day

    def end_pause(self, since: str) -> None:
        """A resume, or the pause's until day: what the pause suspended comes back."""
        assert self.underlying is not None
        self.status = self.underlying.status
        self.leave_pause()
        self.since = since

    def leave_pause(self) -> None:
        """Ends a pause without its status: the suspended rate and conditions resume."""
        if self.underlying is not None:
            self.rate_percent = self.underlying.rate_percent
            self.conditions = self.underlying.conditions
            self.underlying = None
            self.pause = None
            self.until = None

    def suspend(self, since: str) -> None:
        """Starts a pause: the status, rate and conditions wait until it ends."""
        self.underlying = _Underlying(self.status, self.rate_percent, self.conditions)
        self.status = "paused"
        self.rate_percent = None
        self.conditions = ()
        self.since = since

    def apply(self, action: Action) -> None:
        BY_NAME[action.kind].effect(self, action)  # kinds are checked before they reach the fold

    def state(self, uncertain: Sequence[str], based_on: tuple[str, ...]) -> State:
        """The answer: where the fold stands, with what makes it uncertain and what it rests on."""
        # status, rate_percent, conditions, since, until, certain, uncertain_because, based_on
        return _make_tuple(State, (self.status, self.rate_percent, self.conditions, self.since,
                                  self.until.text if self.until is not None else None,
                                  not uncertain, tuple(uncertain), based_on))

    def expire_pause_before(self, day: date) -> None:
        """A pause whose ``until`` day has come ends on that day."""
        if self.until is not None and self.until.start <= day:
            assert self.pause is not None
            self.expired.append(self.pause)
            self.end_pause(self.until.text)


def ordered(actions: Iterable[Action]) -> list[Action]:
    """Effective order: start of period, then record order."""
    return sorted(actions, key=lambda a: a.sort_key)


def state_on(actions: Sequence[Action], day: date) -> State:
    """The state of a rule on ``day`` given all its known actions (any order)."""
    fold = Fold()
    applied: list[Action] = []
    for action in ordered(actions):
        if action.effective.start > day:
            break
        fold.expire_pause_before(action.effective.start)
        fold.apply(action)
        applied.append(action)
    fold.expire_pause_before(day)

    uncertain = [a.id for a in applied if not a.effective.is_precise and a.effective.contains(day)]
    for pause in fold.expired:
        assert pause.until is not None
        if not pause.until.is_precise and pause.until.contains(day) and pause.id not in uncertain:
            uncertain.append(pause.id)
    return fold.state(uncertain, tuple(action.id for action in applied))


def _action_days(action: Action) -> list[date]:
    """The days on which ``action`` may change the answer of :func:`state_on`: the start of its
    effective period and of its until, and the day after either if it is not a day."""
    days = []
    for period in (action.effective, action.until):
        if period is not None:
            days.append(period.start)
            if period.precision != DAY and period.end < date.max:
                days.append(period.end + _ONE_DAY)
    return days


def boundaries(actions: Iterable[Action]) -> list[date]:
    """Every day on which the answer of :func:`state_on` may change."""
    return sorted({day for action in actions for day in _action_days(action)})


class Segment(NamedTuple):
    """A stretch of valid time, ``[valid_from, valid_to)``, over which the state is constant."""

    valid_from: date
    valid_to: date  # exclusive; date.max stands for "open-ended"
    state: State


def segments(actions: Sequence[Action]) -> list[Segment]:
    """The whole valid-time history of a rule as constant stretches, merged where equal."""
    result: list[Segment] = []
    # date.max stands for "open-ended", so no stretch can start on it: an action taking effect
    # on 9999-12-31 itself is the one thing the stretches cannot show.
    cuts = [day for day in boundaries(actions) if day < date.max]
    starts = [date.min, *cuts]
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else date.max
        # An action may take effect on date.min itself (year 0001): ask the fold, assume nothing.
        state = state_on(actions, start)
        if result and result[-1].state == state:
            result[-1] = result[-1]._replace(valid_to=end)
        else:
            result.append(Segment(start, end, state))
    return result


# Keeping the segments of a rule up to date, one change at a time ------------------------------

_LONGEST_PERIOD = timedelta(days=366)  # a year: no imprecise date covers more days than this
_A_PERIOD_IN = date.min + _LONGEST_PERIOD  # the first day a period can have begun before


class _Point(NamedTuple):
    """The fold after every action up to a boundary ``day``, and the state it gives that day."""

    day: date
    status: str
    rate_percent: float | None
    conditions: tuple[str, ...]
    since: str | None
    pause: Action | None
    until: PolicyDate | None
    underlying: tuple[str, float | None, tuple[str, ...]] | None
    applied: int  # how many actions (in effective order) are applied
    expired: int  # how many pauses have ended on their until day
    state: State


class SegmentBuilder:
    """A rule's valid-time segments, kept up to date as its actions are added, changed or dropped.

    Gives exactly what :func:`segments` gives for the same actions. The state on a day depends
    only on actions that start on or before it, so after a change the fold is taken up again
    from the last boundary before the change's first day instead of from the beginning:
    recording actions in effective order costs a few steps each, however long the history.
    """

    def __init__(self, actions: Iterable[Action] = (), based_on: bool = True):
        # Without ``based_on``, states leave it empty: a caller that finds what a state rests on
        # elsewhere saves a list of ids per boundary day (quadratic in a rule's length).
        self._based_on = based_on
        self._actions: list[Action] = []  # effective order
        self._keys: list[tuple[date, int]] = []
        self._ids: list[str] = []
        # The actions whose effective date is not a day, apart: only they make a state uncertain.
        self._imprecise: list[Action] = []  # effective order
        self._imprecise_keys: list[tuple[date, int]] = []
        self._day_counts: dict[date, int] = {}
        self._days: list[date] = [date.min]  # every boundary day, from date.min, ascending
        self._points: list[_Point] = []  # one per day in _days
        self._expired: list[Action] = []  # pauses ended on their until day, in order
        self._segments: list[Segment] = []
        self._old_tail: list[Segment] = []  # what the last change replaced (change_tail)
        self._first_points: list[int] = []  # the index in _points where each segment starts
        # The fold as it stands after the last point, while it does (None: make it again from
        # the last point). A change that starts after every boundary day, which is most of them
        # when actions are recorded in effective order, goes on from it.
        self._end: Fold | None = None
        # Actions on the first or the last representable day, where the stretches of time
        # have edge cases of their own: while there are any, :func:`segments` answers.
        self._extreme = 0
        for action in actions:
            self._insert(action)
        if self._actions or _NO_ACTIONS is None:
            self._update(date.min, False)
        else:  # what folding no actions makes, made once (every rule starts so)
            point, segment = _NO_ACTIONS
            self._points.append(point)
            self._segments.append(segment)
            self._first_points.append(0)

    @property
    def actions(self) -> list[Action]:
        return list(self._actions)

    def segments(self) -> list[Segment]:
        return list(self._segments)

    def change(self, removed: Action | None = None, added: Action | None = None) -> int:
        """Drop ``removed`` and add ``added`` (either may be None).

        Returns how many leading segments are unchanged: only ``segments()[n:]`` may differ.
        """
        if removed is None:
            if added is None:
                self._old_tail = []
                return len(self._segments)
            start = added.effective.start
        elif added is None:
            start = removed.effective.start
        else:
            start = min(removed.effective.start, added.effective.start)
        was_extreme = self._extreme > 0
        if removed is not None:
            self._remove(removed)
        if added is not None:
            self._insert(added)
        return self._update(start, was_extreme)

    def change_tail(
        self, removed: Action | None = None, added: Action | None = None
    ) -> tuple[list[Segment], list[Segment]]:
        """:meth:`change`, answering with the segments it replaced and those that replace them
        (without copying the unchanged ones)."""
        unchanged = self.change(removed, added)
        replaced, self._old_tail = self._old_tail, []  # not kept past the answer
        return replaced, self._segments[unchanged:]

    def _update(self, start: date, was_extreme: bool) -> int:
        if self._extreme:
            self._end = None
            del self._points[:], self._first_points[:]
            self._old_tail = self._segments
            self._segments = segments(self._actions)
            if not self._based_on:
                self._segments = [seg._replace(state=seg.state._replace(based_on=()))
                                  for seg in self._segments]
            return 0
        return self._refold(date.min if was_extreme else start)

    @staticmethod
    def _is_extreme(action: Action) -> bool:
        return action.effective.start in (date.min, date.max) or (
            action.until is not None and action.until.start == date.max)

    # The sorted actions and their boundary days ----------------------------------------

    def _insert(self, action: Action) -> None:
        effective = action.effective
        start = effective.start
        key = (start, action.order)
        keys = self._keys
        if not keys or key > keys[-1]:  # the last in effective order: most actions, in a build
            self._actions.append(action)
            keys.append(key)
            self._ids.append(action.id)
            if effective.precision != DAY:
                self._imprecise.append(action)
                self._imprecise_keys.append(key)
        else:
            index = bisect.bisect_left(keys, key)
            self._actions.insert(index, action)
            keys.insert(index, key)
            self._ids.insert(index, action.id)
            if effective.precision != DAY:
                index = bisect.bisect_left(self._imprecise_keys, key)
                self._imprecise.insert(index, action)
                self._imprecise_keys.insert(index, key)
        self._extreme += self._is_extreme(action)
        counts, days = self._day_counts, self._days
        # An action on a day with no until has one boundary day, its own (as _action_days).
        plain = action.until is None and effective.precision == DAY
        for day in (start,) if plain else _action_days(action):
            count = counts.get(day, 0)
            counts[day] = count + 1
            if count == 0 and date.min < day < date.max:
                bisect.insort(days, day)

    def _remove(self, action: Action) -> None:
        index = bisect.bisect_left(self._keys, action.sort_key)
        if index >= len(self._keys) or self._ids[index] != action.id:
            raise KeyError(f"no action {action.id!r} to remove")
        del self._actions[index], self._keys[index], self._ids[index]
        if not action.effective.is_precise:
            index = bisect.bisect_left(self._imprecise_keys, action.sort_key)
            del self._imprecise[index], self._imprecise_keys[index]
        self._extreme -= self._is_extreme(action)
        for day in _action_days(action):
            count = self._day_counts[day] - 1
            if count:
                self._day_counts[day] = count
            else:
                del self._day_counts[day]
                if date.min < day < date.max:
                    del self._days[bisect.bisect_left(self._days, day)]

    # Folding from a boundary on -----------------------------------------------------------

    def _refold(self, start: date) -> int:
        """Fold again from ``start``; the points before it stay, because nothing before changed."""
        points, expired = self._points, self._expired
        keep = bisect.bisect_left(self._days, start)
        fold = self._end
        if fold is not None and keep == len(points):
            applied = points[-1].applied  # the change starts after every point: go on
        elif keep == 0:
            del points[:]
            fold = Fold()
            applied = 0
            expired.clear()
        else:
            del points[keep:]
            point = points[keep - 1]
            del expired[point.expired:]
            # status, rate_percent, conditions, since, pause, until, underlying, expired
            fold = Fold(point.status, point.rate_percent, point.conditions, point.since,
                         point.pause, point.until,
                         _Underlying(*point.underlying) if point.underlying else None)
            applied = point.applied
        fold.expired = expired
        self._end = None  # until every day is folded again
        actions = self._actions
        track = self._based_on
        based_on = tuple(self._ids[:applied]) if track else ()
        count = len(actions)
        # How many of the applied actions have a date that is not a day (see _state).
        imprecise_keys = self._imprecise_keys
        imprecise = 0 if not imprecise_keys else (
            bisect.bisect_left(imprecise_keys, self._keys[applied])
            if applied < count else len(imprecise_keys))
        for day in self._days[keep:]:
            before = applied
            while applied < count and actions[applied].effective.start <= day:
                action = actions[applied]
                if fold.until is not None:
                    fold.expire_pause_before(action.effective.start)
                fold.apply(action)
                if action.effective.precision != DAY:
                    imprecise += 1
                applied += 1
            if fold.until is not None:
                fold.expire_pause_before(day)
            if applied != before and track:
                based_on = tuple(self._ids[:applied])
            # Without an applied action dated by a month or a year, or a pause ended by its
            # until day, nothing makes the state uncertain.
            state = self._state(fold, day, imprecise, based_on) if imprecise or expired \
                else fold.state((), based_on)
            underlying = fold.underlying
            points.append(_make_tuple(_Point, (
                day, fold.status, fold.rate_percent, fold.conditions, fold.since, fold.pause,
                fold.until,
                (underlying.status, underlying.rate_percent, underlying.conditions)
                if underlying is not None else None,
                applied, len(expired), state,
            )))
        self._end = fold
        return self._merge(keep)

    def _state(self, fold: Fold, day: date, imprecise_applied: int,
               based_on: tuple[str, ...]) -> State:
        """What :func:`state_on` answers for ``day``, from the fold taken up to it, the first
        ``imprecise_applied`` actions whose date is not a day among the actions it applied."""
        uncertain: list[str] = []
        if imprecise_applied:
            # Of the applied actions whose date is not a day, only one that started within the
            # longest period before ``day`` can cover it.
            imprecise = self._imprecise
            first = bisect.bisect_left(self._imprecise_keys, (day - _LONGEST_PERIOD, -1)) \
                if day > _A_PERIOD_IN else 0
            for index in range(first, imprecise_applied):
                effective = imprecise[index].effective
                if effective.start <= day <= effective.end:
                    uncertain.append(imprecise[index].id)
        if self._expired:
            ended: list[str] = []
            # Pauses end in order of their until day: walk back only over the recent ones.
            for pause in reversed(self._expired):
                until = pause.until
                assert until is not None
                if until.end < day - _LONGEST_PERIOD:
                    break
                if not until.is_precise and until.contains(day) and pause.id not in uncertain:
                    ended.append(pause.id)
            for pause_id in reversed(ended):
                if pause_id not in uncertain:
                    uncertain.append(pause_id)
        return fold.state(uncertain, based_on)

    def _merge(self, keep: int) -> int:
        """Rebuild the segments from the points, from the segment holding point ``keep - 1`` on."""
        first = bisect.bisect_left(self._first_points, keep)
        if first > 0:
            first -= 1
        start = self._first_points[first] if first < len(self._first_points) else 0
        segments, first_points = self._segments, self._first_points
        self._old_tail = segments[first:]
        del segments[first:], first_points[first:]
        # Point ``start`` began a segment before the change and neither it nor the segment
        # before it changed: it still begins one.
        points = self._points
        count = len(points)
        index = start
        while index < count:
            point = points[index]
            state, applied = point.state, point.applied
            # Equal states on either side of an action's first day still make two segments,
            # since they rest on different actions (also when states leave based_on empty).
            after = index + 1
            while after < count and points[after].applied == applied \
                    and points[after].state == state:
                after += 1
            segments.append(_make_tuple(Segment, (
                point.day, points[after].day if after < count else date.max, state)))
            first_points.append(index)
            index = after
        return first


# A rule with no actions yet: its one point and its one segment (immutable, shared).
_NO_ACTIONS: tuple[_Point, Segment] | None = None


def _fold_of_nothing() -> tuple[_Point, Segment]:
    made = SegmentBuilder()  # folded the general way: _NO_ACTIONS is not made yet
    return made._points[0], made._segments[0]


_NO_ACTIONS = _fold_of_nothing()
