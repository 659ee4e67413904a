"""The pure fold from a rule's actions to its state on a day.

Everything here is a function of its arguments: no clock, no storage. The read models store what
these functions return; the tests check them against the contract's table row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Iterable, Sequence

from timeline.domain.dates import PolicyDate

KINDS = ("ban", "restrict", "ease", "fee", "pause", "resume", "lift", "propose")
STATUSES = ("none", "proposed", "restricted", "banned", "eased", "in_force", "paused", "lifted")
_SETS_STATUS = {"ban": "banned", "restrict": "restricted", "ease": "eased"}


@dataclass(frozen=True)
class Action:
    """One action as the fold needs it: corrections already applied, retractions dropped."""

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


@dataclass(frozen=True)
class State:
    status: str = "none"
    rate_percent: float | None = None
    conditions: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    certain: bool = True
    uncertain_because: tuple[str, ...] = ()
    based_on: tuple[str, ...] = ()


@dataclass
class _Underlying:
    """What a pause suspends and gives back when it ends."""

    status: str
    rate_percent: float | None
    conditions: tuple[str, ...]


@dataclass
class _Fold:
    status: str = "none"
    rate_percent: float | None = None
    conditions: tuple[str, ...] = ()
    since: str | None = None
    pause: Action | None = None
    until: PolicyDate | None = None
    underlying: _Underlying | None = None
    based_on: list[str] = field(default_factory=list)
    expired: list[Action] = field(default_factory=list)  # pauses that ended on their until day

    @property
    def paused(self) -> bool:
        return self.underlying is not None

    def end_pause(self, since: str) -> None:
        assert self.underlying is not None
        self.status = self.underlying.status
        self.rate_percent = self.underlying.rate_percent
        self.conditions = self.underlying.conditions
        self.underlying = None
        self.pause = None
        self.until = None
        self.since = since

    def leave_pause_for(self, action: Action) -> None:
        """ban, restrict, ease and lift end a pause: the suspended rate and conditions resume."""
        if self.underlying is not None:
            self.rate_percent = self.underlying.rate_percent
            self.conditions = self.underlying.conditions
            self.underlying = None
            self.pause = None
            self.until = None

    def apply(self, action: Action) -> None:
        kind = action.kind
        given = action.conditions
        if kind in _SETS_STATUS:
            self.leave_pause_for(action)
            self.status = _SETS_STATUS[kind]
            self.since = action.effective.text
            if given is not None:
                self.conditions = given
        elif kind == "fee":
            rate = action.rate_percent if action.rate_percent else None
            if self.underlying is not None:
                self.underlying.rate_percent = rate
                if given is not None:
                    self.underlying.conditions = given
            else:
                self.rate_percent = rate
                if rate is not None and self.status in ("none", "proposed", "lifted"):
                    self.status = "in_force"
                    self.since = action.effective.text
                if given is not None:
                    self.conditions = given
        elif kind == "pause":
            if self.underlying is None:
                self.underlying = _Underlying(self.status, self.rate_percent, self.conditions)
                self.status = "paused"
                self.rate_percent = None
                self.conditions = ()
                self.since = action.effective.text
            if given is not None:
                self.underlying.conditions = given
            self.pause = action
            self.until = action.until
        elif kind == "resume":
            if self.underlying is not None:
                self.end_pause(action.effective.text)
        elif kind == "lift":
            self.underlying = None
            self.pause = None
            self.until = None
            self.status = "lifted"
            self.rate_percent = None
            self.conditions = ()
            self.since = action.effective.text
        elif kind == "propose":
            if self.status in ("none", "lifted"):
                self.status = "proposed"
                self.since = action.effective.text
            if given is not None:
                if self.underlying is not None:
                    self.underlying.conditions = given
                else:
                    self.conditions = given
        else:  # pragma: no cover - kinds are validated before they reach the fold
            raise ValueError(f"unknown kind {kind!r}")
        self.based_on.append(action.id)

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
    fold = _Fold()
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
    return State(
        status=fold.status,
        rate_percent=fold.rate_percent,
        conditions=fold.conditions,
        since=fold.since,
        until=fold.until.text if fold.until is not None else None,
        certain=not uncertain,
        uncertain_because=tuple(uncertain),
        based_on=tuple(fold.based_on),
    )


def boundaries(actions: Iterable[Action]) -> list[date]:
    """Every day on which the answer of :func:`state_on` may change."""
    days: set[date] = set()
    for action in actions:
        for period in (action.effective, action.until):
            if period is None:
                continue
            days.add(period.start)
            if not period.is_precise and period.end < date.max:
                days.add(period.end + timedelta(days=1))
    return sorted(days)


@dataclass(frozen=True)
class Segment:
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
            result[-1] = replace(result[-1], valid_to=end)
        else:
            result.append(Segment(start, end, state))
    return result
