"""Events to rows. A batch of rows and the position it reached commit in one transaction,
so a crash never applies an event twice or skips one.

Each rule's valid-time history is kept by a :class:`~timeline.domain.fold.SegmentBuilder`,
which folds again only from the first day an event can change; the rules seen recently stay in
memory between events (a bounded cache), and a page of events is written with one statement
per table. The rows are the same as folding every rule from scratch after every event.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable, Iterator, Sequence

from timeline.domain.dates import PolicyDate, day_text, format_instant
from timeline.domain.fold import Action, Segment, SegmentBuilder
from timeline.domain.kinds import apply_correction
from timeline.domain.model import Rule, to_fold_action
from timeline.events import ACTION_RECORDED, RULE_REGISTERED, event_data, event_type
from timeline.fastjson import dumps as _dumps
from timeline.readmodel.store import (
    END_OF_RECORD, END_OF_TIME, ActionRow, ActionStartRow, ReadModel, RequestRow, RuleEventRow,
    RuleRow, StateRow,
)
from timeline.readmodel.writer import (
    ClosedStart, ClosedState, PageRows, RuleVersion, write_rows,
)

# How many rules' histories stay in memory, in units of one action (about 1.2 KiB each, by
# tracemalloc: the action, its boundary days, points and segments): a busy stretch of history,
# and a catch-up of a million actions still well under a GiB.
CACHE_UNITS = 300_000

# Events per page of rows when a read model is built rule by rule (see pages_by_rule).
BUILD_PAGE = 10_000

# Up to this many events projected by another process are taken into the rules held in memory
# (see Projector._follow); more, and they are forgotten.
FOLLOW_EVENTS = 1_000


def _day(value: date) -> str:
    """A day as the read model stores it: the open end of time sorts after every real day."""
    return END_OF_TIME if value == date.max else day_text(value)


@dataclass(slots=True)
class _Known:
    """One action as currently known: corrections applied.

    ``fields`` is kept only while the page that wrote them is open: a correction or retraction
    later reads them back from the actions table, so the cache holds little more than the fold.
    """

    fields: dict[str, Any] | None
    position: int
    recorded_at: str
    corrected: bool = False
    retracted: bool = False
    fold: Action | None = None


@dataclass(slots=True)
class _RuleView:
    """What the projector keeps of one rule between events."""

    jurisdiction: str
    instrument: str
    actions: dict[str, _Known] = field(default_factory=dict)
    builder: SegmentBuilder = field(default_factory=lambda: SegmentBuilder(based_on=False))
    counted: int = 0  # the units this view was last counted for in the cache's total

    @property
    def units(self) -> int:
        return 1 + len(self.actions)


@dataclass
class _Page:
    """The rows of one page of events, written together when the page ends."""

    rules: list[RuleRow] = field(default_factory=list)
    events: list[RuleEventRow] = field(default_factory=list)
    states: list[StateRow] = field(default_factory=list)
    # (rule_id, valid_from) -> where in ``states`` the open row of this page is: closed there
    # if the page closes it
    open_states: dict[tuple[str, str], int] = field(default_factory=dict)
    closed_states: list[ClosedState] = field(default_factory=list)  # rows of earlier pages
    starts: list[ActionStartRow] = field(default_factory=list)
    open_starts: dict[tuple[str, str], int] = field(default_factory=dict)  # as open_states
    closed_starts: list[ClosedStart] = field(default_factory=list)
    actions: dict[tuple[str, str], tuple[_RuleView, _Known]] = field(default_factory=dict)
    requests: list[RequestRow] = field(default_factory=list)
    versions: dict[str, tuple[int, str]] = field(default_factory=dict)  # rule's newest event


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while projecting, building or writing.

    The rules kept in memory (and a long rule's snapshot, decoded on a first write) are many
    small containers, and every full collection walks them all again, for nothing: what the
    projector and a write make holds no reference cycles, so reference counting alone frees it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Projector:
    """Keeps every read model in step with the event store."""

    def __init__(self, readmodel: ReadModel, cache_units: int = CACHE_UNITS):
        self.readmodel = readmodel
        self.cache_units = cache_units
        self._views: OrderedDict[str, _RuleView] = OrderedDict()
        self._units = 0
        # The view _view gave last (None: ask the cache), while it is in the cache.
        self._last_rule: str | None = None
        self._last_view: _RuleView | None = None
        # The (generation, position) the cached views describe; anything else empties the cache.
        self._synced: tuple[int, int] | None = None
        self._mutex = threading.Lock()
        self._rows = _Page()  # the page being written

    def catch_up(
        self,
        fetch: Callable[[int, int], Sequence[tuple[int, Rule.Event]]],
        batch: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Project every event after the stored position; returns the position reached."""
        with self._mutex, collector_paused():
            while True:
                with self.readmodel.write() as conn:
                    position = self.readmodel.position(conn)
                    generation = self.readmodel.generation(conn)
                    if self._synced != (generation, position):
                        self._follow(conn, fetch, generation, position)
                    page = fetch(position, batch)
                    if not page:
                        self._synced = (generation, position)
                        return position
                    self._synced = None  # until this page is committed
                    try:
                        self._apply_page(conn, page)
                    except BaseException:
                        self._forget()
                        raise
                    self.readmodel.set_position(conn, page[-1][0])
                self._synced = (generation, page[-1][0])
                self._evict()
                if progress is not None:
                    progress(page[-1][0], len(page))
                if len(page) < batch:  # the last page: asking again would find nothing
                    return page[-1][0]

    def pages_by_rule(self, events: Iterable[tuple[int, Rule.Event]]) -> Iterator[PageRows]:
        """Fold ``events``, each rule's together in version order, into pages of rows.

        A rule is folded from its first event to its last with nothing else in between, and
        pages end between rules: every row of a rule is closed in memory before it is written
        (no row is written twice), and the rows reach the indexes in key order.
        """
        self._forget()
        rows = self._rows = _Page()
        rule_id = None
        for position, event in events:
            if event.originator_id != rule_id:
                if len(rows.events) >= BUILD_PAGE:
                    yield self._page_rows(rows)
                    self._forget()
                    rows = self._rows = _Page()
                rule_id = event.originator_id
            self.apply(None, position, event)  # type: ignore[arg-type]  # all in memory
        if rows.events:
            yield self._page_rows(rows)
        self._forget()

    def _follow(self, conn: sqlite3.Connection,
                fetch: Callable[[int, int], Sequence[tuple[int, Rule.Event]]],
                generation: int, position: int) -> None:
        """Another process (or a rebuild) moved the read model on to ``position``.

        After a few events of another process (several servers on one store), the rules held
        here take them in as if this projector had written them, rows left out: a rule with a
        long history is not folded again from its rows. Otherwise they are forgotten.
        """
        synced = self._synced
        missed: Sequence[tuple[int, Rule.Event]] = []
        if synced is not None and synced[0] == generation and synced[1] < position:
            missed = fetch(synced[1], FOLLOW_EVENTS)
        if not missed or missed[-1][0] < position:
            self._forget()
            return
        kept, self._rows = self._rows, _Page()  # rows already written by the other process
        try:
            for event_position, event in missed:
                if event_position > position:
                    break
                if event.originator_id in self._views and event_type(event) != RULE_REGISTERED:
                    self.apply(conn, event_position, event)
        except BaseException:
            self._forget()
            raise
        finally:
            for _, known in self._rows.actions.values():
                known.fields = None
            self._rows = kept
        self._last_rule = self._last_view = None

    def _forget(self) -> None:
        self._views.clear()
        self._units = 0
        self._last_rule = self._last_view = None

    def _evict(self) -> None:
        while self._units > self.cache_units and self._views:
            _, view = self._views.popitem(last=False)
            self._units -= view.counted
        self._last_rule = self._last_view = None

    # One page ------------------------------------------------------------------------------

    def _apply_page(self, conn: sqlite3.Connection, page: Sequence[tuple[int, Rule.Event]]) -> None:
        rows = self._rows = _Page()
        for position, event in page:
            self.apply(conn, position, event)
        self._write(conn, rows)
        for _, known in rows.actions.values():
            known.fields = None

    def apply(self, conn: sqlite3.Connection, position: int, event: Rule.Event) -> None:
        """Add one event to the page being written (its rows go out when the page ends)."""
        rows = self._rows
        rule_id = event.originator_id
        kind = event_type(event)
        recorded_at = format_instant(event.timestamp)
        # The action the event is about, and the id of what it made (the rule, the action, the
        # correction or the retraction), as event_data() has them, without copying the data.
        if kind == ACTION_RECORDED:
            action_id = made = event.action["id"]
        elif kind == RULE_REGISTERED:
            action_id, made = None, rule_id
        else:
            action_id = event.action_id
            made = event_data(event)["id"]
        rows.events.append(RuleEventRow(rule_id=rule_id, recorded_at=recorded_at,
                                        version=event.originator_version, position=position,
                                        type=kind, action_id=action_id))
        if kind == RULE_REGISTERED:
            self._register(rows, position, event.originator_version, recorded_at,
                           event_data(event))
        else:
            rows.versions[rule_id] = (event.originator_version, recorded_at)
            view = self._view(conn, rule_id)
            self._change_action(conn, rows, rule_id, view, position, recorded_at, event)
        request = event.request
        if request and request.get("key"):
            rows.requests.append(RequestRow(
                key=request["key"], fingerprint=request.get("fingerprint", ""), rule_id=rule_id,
                position=position, type=kind, object_id=made, recorded_at=recorded_at))

    def _register(self, rows: _Page, position: int, version: int, recorded_at: str,
                  data: dict) -> None:
        rows.rules.append(RuleRow(
            id=data["id"], title=data["title"], jurisdiction=data["jurisdiction"],
            instrument=data["instrument"], targets=_dumps(data["targets"]),
            subjects=_dumps(data["subjects"]), tags=_dumps(data["tags"]),
            links=_dumps(data["links"]), subjects_text=" ".join(data["subjects"]),
            registered_at=recorded_at, position=position, last_version=version,
            last_recorded_at=recorded_at,
        ))
        view = _RuleView(data["jurisdiction"], data["instrument"])
        self._remember(data["id"], view)
        self._replace_states(rows, data["id"], recorded_at, [], view.builder.segments())

    def _change_action(
        self, conn: sqlite3.Connection, rows: _Page, rule_id: str, view: _RuleView, position: int,
        recorded_at: str, event: Rule.Event,
    ) -> None:
        if isinstance(event, Rule.ActionRecorded):
            action_id = event.action["id"]
            known = _Known(event.action, position, recorded_at)  # copied if corrected
            view.actions[action_id] = known
            self._recount(view)
            removed = None
        else:
            action_id = event.action_id
            known = view.actions[action_id]
            if known.fields is None:
                known.fields = json.loads(conn.execute(
                    "SELECT data FROM actions WHERE rule_id = ? AND id = ?", (rule_id, action_id)
                ).fetchone()[0])
            removed = known.fold
            if isinstance(event, Rule.ActionCorrected):
                known.corrected = True
                known.fields = apply_correction(known.fields, event.changes)
            else:
                known.retracted = True
        known.fold = None if known.retracted else to_fold_action(known.fields, known.position)
        self._replace_start(rows, rule_id, action_id, recorded_at, removed, known.fold)
        old, new = view.builder.change_tail(removed, known.fold)
        self._replace_states(rows, rule_id, recorded_at, old, new)
        rows.actions[(rule_id, action_id)] = (view, known)

    @staticmethod
    def _replace_start(rows: _Page, rule_id: str, action_id: str, recorded_at: str,
                       old: Action | None, new: Action | None) -> None:
        """Keep ``action_starts`` in step: an action's row changes when its start day does."""
        old_start = _day(old.effective.start) if old is not None else None
        new_start = _day(new.effective.start) if new is not None else None
        if old_start == new_start:
            return
        key = (rule_id, action_id)
        if old is not None:
            pending = rows.open_starts.pop(key, None)
            if pending is not None:
                rows.starts[pending] = rows.starts[pending]._replace(known_to=recorded_at)
            else:
                rows.closed_starts.append(ClosedStart(known_to=recorded_at, rule_id=rule_id,
                                                      effective_start=old_start, ord=old.order))
        if new is not None:
            rows.open_starts[key] = len(rows.starts)
            rows.starts.append(ActionStartRow(
                rule_id=rule_id, effective_start=new_start, ord=new.order,
                known_from=recorded_at, known_to=END_OF_RECORD, action_id=action_id))

    def _replace_states(
        self, rows: _Page, rule_id: str, recorded_at: str, old: list[Segment], new: list[Segment],
    ) -> None:
        """Close the rows that no longer hold and open the new ones, from ``recorded_at`` on.

        A row is its segment's start and state (the builder leaves based_on empty), so equal
        states on the same day are the same row: only the others are written.
        """
        # Both lists run by start day: walk them side by side.
        open_states = rows.open_states
        i = j = 0
        old_count, new_count = len(old), len(new)
        while i < old_count or j < new_count:
            if j < new_count and i < old_count:
                day, new_day = old[i][0], new[j][0]
                if day == new_day:
                    state = new[j][2]
                    close = open_ = old[i][2] != state
                    i += 1
                    j += 1
                elif day < new_day:
                    close, open_ = True, False
                    i += 1
                else:
                    day, state = new_day, new[j][2]
                    close, open_ = False, True
                    j += 1
            elif i < old_count:
                day = old[i][0]
                close, open_ = True, False
                i += 1
            else:
                day, state = new[j][0], new[j][2]
                close, open_ = False, True
                j += 1
            if close:
                valid_from = _day(day)
                pending = open_states.pop((rule_id, valid_from), None)
                if pending is not None:
                    rows.states[pending] = rows.states[pending]._replace(known_to=recorded_at)
                else:
                    rows.closed_states.append(ClosedState(known_to=recorded_at, rule_id=rule_id,
                                                          valid_from=valid_from))
            if open_:
                # A state as its row stores it: not where it ends (the next row's start) nor
                # what it rests on (action_starts). Most states have neither conditions nor
                # doubts.
                valid_from = _day(day)
                conditions, uncertain_because = state.conditions, state.uncertain_because
                open_states[(rule_id, valid_from)] = len(rows.states)
                rows.states.append(StateRow(
                    rule_id=rule_id, valid_from=valid_from, known_from=recorded_at,
                    known_to=END_OF_RECORD, status=state.status, rate_percent=state.rate_percent,
                    conditions=_dumps(conditions) if conditions else "[]", since=state.since,
                    until=state.until, certain=1 if state.certain else 0,
                    uncertain_because=_dumps(uncertain_because) if uncertain_because else "[]"))

    # The cache of rules ---------------------------------------------------------------------

    def _remember(self, rule_id: str, view: _RuleView) -> None:
        self._views[rule_id] = view
        self._recount(view)
        self._last_rule = self._last_view = None

    def _recount(self, view: _RuleView) -> None:
        units = view.units
        self._units += units - view.counted
        view.counted = units

    def _view(self, conn: sqlite3.Connection, rule_id: str) -> _RuleView:
        if rule_id == self._last_rule:  # a build gives each rule's events together
            return self._last_view  # type: ignore[return-value]
        view = self._views.get(rule_id)
        if view is not None:
            self._views.move_to_end(rule_id)
        else:
            view = self._load(conn, rule_id)
        self._last_rule, self._last_view = rule_id, view
        return view

    def _load(self, conn: sqlite3.Connection, rule_id: str) -> _RuleView:
        """A rule's view from its stored rows (never one of the page being written: see _evict).

        The actions table holds each action as currently known, so one row per action (and
        only the fields the fold needs, picked out by SQLite) rebuilds the rule's segments.
        """
        rule = conn.execute(
            "SELECT jurisdiction, instrument FROM rules WHERE id = ?", (rule_id,)
        ).fetchone()
        if rule is None:
            raise LookupError(f"event for rule {rule_id!r}, which is not registered")
        view = _RuleView(rule["jurisdiction"], rule["instrument"])
        for (action_id, position, recorded_at, corrected, retracted, kind, effective, rate, until,
             conditions) in conn.execute(
                "SELECT id, position, recorded_at, corrected, retracted, kind, effective, "
                "json_extract(data, '$.rate_percent'), json_extract(data, '$.until'), "
                "json_extract(data, '$.conditions') FROM actions WHERE rule_id = ?",
                (rule_id,)):
            fold = None
            if not retracted:
                fold = Action(
                    id=action_id, kind=kind, effective=PolicyDate.parse(effective), order=position,
                    rate_percent=rate, until=PolicyDate.parse(until) if until else None,
                    conditions=tuple(json.loads(conditions)) if conditions is not None else None,
                )
            view.actions[action_id] = _Known(None, position, recorded_at, bool(corrected),
                                             bool(retracted), fold)
        view.builder = SegmentBuilder((k.fold for k in view.actions.values() if k.fold is not None),
                                      based_on=False)
        self._remember(rule_id, view)
        return view

    # Writing a page -----------------------------------------------------------------------------

    def _write(self, conn: sqlite3.Connection, rows: _Page) -> None:
        write_rows(conn, self._page_rows(rows))

    def _page_rows(self, rows: _Page) -> PageRows:
        # A rule registered on this page goes in with its newest version; the others are updated.
        versions = rows.versions
        rules = [row._replace(last_version=versions[row.id][0],
                              last_recorded_at=versions[row.id][1])
                 if row.id in versions else row for row in rows.rules]
        registered = {row.id for row in rows.rules}
        return PageRows(
            rules, rows.events, rows.closed_states, rows.states, rows.closed_starts,
            rows.starts,
            [self._action_row(rule_id, view, known)
             for (rule_id, _), (view, known) in rows.actions.items()],
            rows.requests,
            [RuleVersion(last_version=version, last_recorded_at=at, id=rule_id)
             for rule_id, (version, at) in versions.items() if rule_id not in registered],
        )

    @staticmethod
    def _action_row(rule_id: str, view: _RuleView, known: _Known) -> ActionRow:
        fields = known.fields
        effective = known.fold.effective if known.fold is not None else PolicyDate.parse(fields["effective"])
        return ActionRow(
            rule_id=rule_id, id=fields["id"], kind=fields["kind"], effective=fields["effective"],
            effective_start=day_text(effective.start), effective_end=day_text(effective.end),
            summary=fields.get("summary", ""), data=_dumps(fields),
            jurisdiction=view.jurisdiction, instrument=view.instrument,
            recorded_at=known.recorded_at, position=known.position,
            corrected=int(known.corrected), retracted=int(known.retracted))
