"""Events to rows. A batch of rows and the position it reached commit in one transaction,
so a crash never applies an event twice or skips one.

Each rule's valid-time history is kept by a :class:`~timeline.domain.fold.SegmentBuilder`,
which folds again only from the first day an event can change; the rules seen recently stay in
memory between events (a bounded cache), and a page of events is written with one statement
per table. The rows are the same as folding every rule from scratch after every event.
"""

from __future__ import annotations

import functools
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
    END_OF_RECORD, END_OF_TIME, START_OF_TIME, BuildIndexes, ReadModel,
)
from timeline.readmodel.writer import (
    HelperEvents, PageRows, PageSender, WriterProcess, can_fork, check_empty, name_process,
    write_rows,
)

# Catching up this many events or more writes the full-text indexes once at the end instead of
# row by row (about four times cheaper per action).
BULK_EVENTS = 5_000

# How many rules' histories stay in memory, in units of one action (about 1.2 KiB each, by
# tracemalloc: the action, its boundary days, points and segments): a busy stretch of history,
# and a rebuild of a million actions still well under a GiB.
CACHE_UNITS = 300_000

# Events per statement batch when a read model is built rule by rule (see Projector.build).
BUILD_PAGE = 10_000

# Up to this many events projected by another process are taken into the rules held in memory
# (see Projector._follow); more, and they are forgotten.
FOLLOW_EVENTS = 1_000

# From this many events on, a build folds in this process and writes in another (see build).
SEPARATE_WRITER_EVENTS = 20_000


# The same few thousand days come back for every rule, and date.isoformat formats through
# printf: a cached text is a dictionary lookup (about 7% of a build's fold, by callgrind).
@functools.lru_cache(maxsize=1 << 16)
def _day(value: date) -> str:
    if value == date.min:
        return START_OF_TIME
    if value == date.max:
        return END_OF_TIME
    return value.isoformat()


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

    rules: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    states: list[list] = field(default_factory=list)
    # (rule_id, valid_from) -> the open row of this page, closed in place if the page closes it
    open_states: dict[tuple[str, str], list] = field(default_factory=dict)
    closed_states: list[tuple[str, str, str]] = field(default_factory=list)  # rows of earlier pages
    starts: list[list] = field(default_factory=list)
    open_starts: dict[tuple[str, str], list] = field(default_factory=dict)  # as open_states
    closed_starts: list[tuple[str, str, str, int]] = field(default_factory=list)
    actions: dict[tuple[str, str], tuple[_RuleView, _Known]] = field(default_factory=dict)
    requests: list[tuple] = field(default_factory=list)
    versions: dict[str, tuple[int, str]] = field(default_factory=dict)  # rule's newest event


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while projecting.

    The cached rules are many small objects, and every full collection walks all of them: with
    the collector on, a rebuild spent a third of its time there. What the projector makes holds
    no reference cycles, so reference counting alone frees it.
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
        head: int | None = None,
    ) -> int:
        """Project every event after the stored position; returns the position reached.

        ``head``, when given, is the store's newest position: far behind it, the full-text
        indexes are built once at the end.
        """
        if head is not None and head - self.readmodel.position() >= BULK_EVENTS:
            with self.bulk():
                return self._catch_up(fetch, batch, progress)
        return self._catch_up(fetch, batch, progress)

    @contextmanager
    def bulk(self, drop: bool = True) -> Iterator[None]:
        """Leave the full-text indexes out while many events are projected, then build them
        (``drop=False``: the caller drops them itself)."""
        if drop:
            with self._mutex:
                self.readmodel.drop_search()
        try:
            yield
        finally:
            with self._mutex:
                self.readmodel.create_search()

    def _catch_up(
        self,
        fetch: Callable[[int, int], Sequence[tuple[int, Rule.Event]]],
        batch: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
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

    def build(
        self,
        events_by_rule: Iterable[tuple[int, Rule.Event]],
        head: int,
        progress: Callable[[int, int], None] | None = None,
        separate_writer: bool | None = None,
        before_commit: Callable[[], None] | None = None,
        helper_events: HelperEvents | None = None,
        replace: bool = False,
    ) -> int:
        """Make the read model from every event up to ``head``, in one transaction: into
        empty tables, or with ``replace``, in place of the read model there is.

        ``events_by_rule`` gives each rule's events together, in version order
        (:meth:`~timeline.application.PolicyApplication.events_by_rule`). A rule is folded from
        its first event to its last with nothing else in between, so no rule is ever put
        aside and read back, its rows close one another in memory (no row is written twice),
        and they reach the indexes in key order. Until the transaction commits, readers see
        the read model as it was, and a crash leaves it so.

        With ``separate_writer`` (by default, from ``SEPARATE_WRITER_EVENTS`` events on), a
        second process writes the rows while this one folds the events into them.
        ``before_commit()`` runs once every row is written; if it raises, nothing is kept.

        With a separate writer, ``helper_events`` shares the folding: in a third process it
        gives the events of the rules ``events_by_rule`` leaves out (read from a store of its
        own, or sent from here), and that process folds them and hands its rows to the same
        writer.
        """
        if separate_writer is None:
            separate_writer = helper_events is not None or (
                head >= SEPARATE_WRITER_EVENTS and can_fork())
        if helper_events is not None and not separate_writer:
            raise ValueError("a helper hands its rows to a separate writer")
        with self.bulk(drop=not replace), self._mutex, collector_paused():
            self._forget()
            self._synced = None
            try:
                if separate_writer:
                    writer = WriterProcess(self.readmodel.path,
                                           helpers=0 if helper_events is None else 1,
                                           replace=replace)
                    helper = None
                    try:
                        if helper_events is not None:
                            helper = _start_helper(helper_events, writer)
                        self._build(self.readmodel.connection(), events_by_rule, writer.write,
                                    progress)
                        if before_commit is not None:
                            before_commit()
                        writer.commit(head)
                        if progress is not None and writer.helper_events:
                            progress(head, writer.helper_events)
                    finally:
                        writer.close()
                        if helper is not None:
                            helper.join()
                        if helper_events is not None:
                            helper_events.close()
                else:
                    with self.readmodel.write() as conn:
                        indexes = None
                        if replace:  # as the writer process does: every index in place
                            ReadModel.replace_tables(conn)
                            indexes = BuildIndexes(conn)
                        else:
                            check_empty(conn)

                        def write(page: PageRows) -> None:
                            write_rows(conn, page)
                            if indexes is not None:
                                indexes.after_page()

                        self._build(conn, events_by_rule, write, progress)
                        self.readmodel.set_position(conn, head)
                        if indexes is not None:
                            indexes.finish()
                        if before_commit is not None:
                            before_commit()
            finally:
                self._forget()
        self._synced = (self.readmodel.generation(), head)
        return head

    def _build(self, conn: sqlite3.Connection | None, events: Iterable[tuple[int, Rule.Event]],
               write: Callable[[PageRows], None],
               progress: Callable[[int, int], None] | None) -> int:
        """Fold ``events`` (whole rules, one after another) into pages of rows for ``write``;
        the count of events."""
        rows = self._rows = _Page()
        rule_id = None
        count = 0
        for count, (position, event) in enumerate(events, start=1):
            if event.originator_id != rule_id:
                # Pages end between rules: every row of a rule is closed before it is written.
                if len(rows.events) >= BUILD_PAGE:
                    write(self._page_rows(rows))
                    self._forget()
                    if progress is not None:
                        progress(position, len(rows.events))
                    rows = self._rows = _Page()
                rule_id = event.originator_id
            self.apply(conn, position, event)
        write(self._page_rows(rows))
        if progress is not None and rows.events:
            progress(rows.events[-1][0], len(rows.events))
        return count

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
        rows.events.append((position, rule_id, event.originator_version, kind, action_id,
                            recorded_at))
        if kind == RULE_REGISTERED:
            self._register(rows, position, event.originator_version, recorded_at,
                           event_data(event))
        else:
            rows.versions[rule_id] = (event.originator_version, recorded_at)
            view = self._view(conn, rule_id)
            self._change_action(conn, rows, rule_id, view, position, recorded_at, event)
        request = event.request
        if request and request.get("key"):
            rows.requests.append((request["key"], request.get("fingerprint", ""), rule_id, position,
                                  kind, made, recorded_at))

    def _register(self, rows: _Page, position: int, version: int, recorded_at: str,
                  data: dict) -> None:
        rows.rules.append((
            data["id"], data["title"], data["jurisdiction"], data["instrument"],
            _dumps(data["targets"]), _dumps(data["subjects"]), _dumps(data["tags"]),
            _dumps(data["links"]), " ".join(data["subjects"]), recorded_at, position,
            version, recorded_at,
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
                pending[4] = recorded_at
            else:
                rows.closed_starts.append((recorded_at, rule_id, old_start, old.order))
        if new is not None:
            row = [rule_id, new_start, new.order, recorded_at, END_OF_RECORD, action_id]
            rows.starts.append(row)
            rows.open_starts[key] = row

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
                    pending[3] = recorded_at
                else:
                    rows.closed_states.append((recorded_at, rule_id, valid_from))
            if open_:
                # A state as its row stores it: not where it ends (the next row's start) nor
                # what it rests on (action_starts). Most states have neither conditions nor
                # doubts.
                valid_from = _day(day)
                conditions, uncertain_because = state.conditions, state.uncertain_because
                row = [rule_id, valid_from, recorded_at, END_OF_RECORD, state.status,
                       state.rate_percent, _dumps(conditions) if conditions else "[]",
                       state.since, state.until, 1 if state.certain else 0,
                       _dumps(uncertain_because) if uncertain_because else "[]"]
                rows.states.append(row)
                open_states[(rule_id, valid_from)] = row

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
        rules = [row[:-2] + versions[row[0]] if row[0] in versions else row for row in rows.rules]
        registered = {row[0] for row in rows.rules}
        return PageRows(
            rules, rows.events, rows.closed_states, rows.states, rows.closed_starts,
            rows.starts,
            [self._action_row(rule_id, view, known)
             for (rule_id, _), (view, known) in rows.actions.items()],
            rows.requests,
            [(version, at, rule_id) for rule_id, (version, at) in versions.items()
             if rule_id not in registered],
        )

    @staticmethod
    def _action_row(rule_id: str, view: _RuleView, known: _Known) -> tuple:
        fields = known.fields
        effective = known.fold.effective if known.fold is not None else PolicyDate.parse(fields["effective"])
        return (rule_id, fields["id"], fields["kind"], fields["effective"],
                day_text(effective.start), day_text(effective.end), fields.get("summary", ""),
                _dumps(fields), view.jurisdiction, view.instrument, known.recorded_at,
                known.position, int(known.corrected), int(known.retracted))


def _start_helper(events: HelperEvents, writer: WriterProcess) -> Any:
    """Fork the process that folds ``events.events()`` into rows for ``writer`` (see
    Projector.build)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    pipe = writer.helper_pipes[0]
    events.before_fork()
    process = context.Process(target=_fold_for_writer, args=(events, pipe, writer.own_pipes()),
                              name="timeline-readmodel-folder", daemon=True)
    process.start()
    pipe.close()  # the helper's alone now: the writer sees it close if the helper stops
    events.after_fork()
    return process


def _fold_for_writer(events: HelperEvents, pipe: Any, others: list[Any]) -> None:
    """The helper process: fold its rules, send each page of rows, then ("done", events)."""
    name_process("timeline-folder")
    for end in others:
        end.close()
    sender = PageSender(pipe)
    try:
        with collector_paused():
            count = Projector(None)._build(  # type: ignore[arg-type]
                None, events.events(), lambda page: sender.send(("rows", tuple(page))), None)
        sender.send(("done", count))
    except Exception as exc:  # the writer rolls back and tells the projecting process
        try:
            sender.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        sender.flush_quietly()  # every message written (one thread writes the pipe)
        pipe.close()
