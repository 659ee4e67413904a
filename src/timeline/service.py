"""The tracker as its users see it: writes under the store's lock, reads from caught-up read models.

The CLI and the web layer call this and nothing below it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Iterable, Iterator

from timeline.application import Outcome, PolicyApplication
from timeline.config import Settings
from timeline.cursors import LIST_LIMIT, LIST_MAX_LIMIT, ListCursor
from timeline.database import ensure_postgres_schema, schema_changes
from timeline.domain.dates import PolicyDate, format_instant, parse_instant
from timeline.domain.errors import InvalidInput, StoreNotEmpty, TimelineError
from timeline.events import from_record, to_record
from timeline.import_check import CheckBeside
from timeline.readmodel import ReadModel, published, queries, research
from timeline.readmodel.build import build
from timeline.readmodel.projector import Projector, collector_paused
from timeline.readmodel.store import connect
from timeline.writelock import ONE_MICROSECOND, FileWriteLock, PostgresWriteLock, RecordClock, utcnow

# The most rows a panel may have: more is refused (400) before any row is read.
PANEL_MAX_ROWS = 50_000_000


@dataclass(frozen=True)
class Written:
    """The answer to a write: what it stored (or had stored, for a repeat)."""

    id: str
    rule_id: str
    position: int
    recorded_at: str
    created: bool
    type: str = ""
    replayed: bool = False  # answered from a remembered Idempotency-Key

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "position": self.position, "recorded_at": self.recorded_at}


class Tracker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._closing: list[Callable[[], None]] = []
        settings.home.mkdir(parents=True, exist_ok=True)
        env = settings.eventsourcing_env()
        if settings.on_postgres:
            ensure_postgres_schema(settings)
            self.lock = PostgresWriteLock(settings.postgres_conninfo(), settings.postgres_schema)
        else:
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.lock = FileWriteLock(settings.sqlite_path.with_name(settings.sqlite_path.name + ".lock"))
        with schema_changes(settings):  # eventsourcing creates its tables and functions here
            self.app = PolicyApplication(env=env)
        self.readmodel = ReadModel(settings.readmodel_path)
        self.projector = Projector(self.readmodel)
        self._caught_up_at: int | None = None  # the lock's holds() when last seen caught up
        # The position and record time of this tracker's newest write (see _last_recorded_at).
        self._last_written: tuple[int, datetime] | None = None
        self._head_query = self.app.head_query()  # read with the writers passed (PostgreSQL)
        self._check_readmodel()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the tracker closes (helpers holding connections of their own)."""
        self._closing.append(callback)

    def close(self) -> None:
        for callback in reversed(self._closing):
            callback()
        self._closing.clear()
        self.readmodel.close()
        self.lock.close()
        self.app.close()

    def _check_readmodel(self) -> None:
        """A read model ahead of its store belongs to another store: start it again."""
        if self.readmodel.position() > self.app.head():
            with self.lock.hold():  # other trackers see a writer pass, and look again
                if self.readmodel.position() > self.app.head():
                    self.readmodel.drop()

    # Keeping read models in step -----------------------------------------------------------

    def catch_up(self, head: int | None = None) -> int:
        """Project every stored event (up to ``head``, the store's head when known)."""
        if head is None:
            head = self.app.head()
        position = self.readmodel.position()
        if position >= head:
            return position
        if position == 0 and not self.settings.on_postgres:
            # An empty read model (a new file, or one of an older layout dropped on opening) is
            # made as a rebuild makes it, in one pass, rather than event by event. Not on
            # PostgreSQL: the write lock it holds would stop every server's writes meanwhile,
            # for the sake of one new server's read model.
            with self.lock.hold():
                if self.readmodel.position() == 0:
                    return self.rebuild()
        return self.projector.catch_up(self.app.events_after)

    def known_at(self, requested: datetime | None = None) -> str:
        """The instant an answer is given for, with every event recorded by then projected.

        A writer takes its record time and commits while it holds the store-wide lock. One that
        takes the lock after ``pass_writers`` returns reads the clock after ``now`` was read,
        so its events come after ``now``; one that holds it before is waited for (a shared
        lock taken and dropped: readers keep out no other reader). So when it returns, every
        event recorded up to ``now`` is committed, the head read after it covers them all, and
        catching up to that head makes the answer complete.
        """
        now = utcnow() - ONE_MICROSECOND
        if requested is None:
            # Asked as of now, the newest event is almost always older: skip looking it up.
            text = format_instant(now)
        else:
            text = format_instant(now if requested > now else requested)
            last = queries.last_recorded_at(self.readmodel.connection())
            if last is not None and text <= last:
                return text  # the answer's events are projected already
        head = self.lock.pass_writers(then=self._head_query)
        # Read after passing the writers: if no writer has taken the lock since the read model
        # was last seen caught up (from this tracker), it still is, and two lookups are saved.
        holds = self.lock.holds()
        if holds is None or holds != self._caught_up_at:
            self.catch_up(head=head)
            self._caught_up_at = holds
        return text

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        with self.lock.hold():
            head = self.app.head()
            # The new read model replaces the old in one transaction: readers see the old one
            # until it commits, and keep it if the rebuild fails.
            return build(self.readmodel, self.app.events_by_rule(head), head, progress)

    # Writes ------------------------------------------------------------------------------

    def _write(
        self,
        request: dict[str, str] | None,
        command: Callable[[RecordClock, dict[str, str] | None], Outcome],
        type_: str,
    ) -> Written:
        with self.lock.hold():
            head = self.app.head()
            if request and request.get("key"):
                self.catch_up(head=head)  # a repeated key is answered from the read model
                seen = queries.request_by_key(self.readmodel.connection(), request["key"])
                if seen is not None:
                    if seen["fingerprint"] != request.get("fingerprint"):
                        raise InvalidInput(
                            "This Idempotency-Key was used with another request.",
                            {"Idempotency-Key": "already used with another request body"},
                        )
                    return Written(seen["object_id"], seen["rule_id"], seen["position"],
                                   seen["recorded_at"], created=False, type=seen["type"],
                                   replayed=True)
            clock = RecordClock(self._last_recorded_at(head))
            with collector_paused():
                outcome = command(clock, request)
            if outcome.created:
                self._last_written = (outcome.position, outcome.recorded_at)
        # Projected once the next writer may save, and before the answer: a read right after
        # it sees the write (a reader in another process catches up from the store itself).
        with collector_paused():
            self.projector.catch_up(_then(head, outcome.events, self.app.events_after))
        if outcome.created:
            assert outcome.position is not None and outcome.recorded_at is not None
            return Written(outcome.id, outcome.rule_id, outcome.position,
                           format_instant(outcome.recorded_at), True, type_)
        row = queries.event_at(self.readmodel.connection(), outcome.rule_id, outcome.version)
        return Written(outcome.id, outcome.rule_id, row["position"], row["recorded_at"], False, type_)

    def _last_recorded_at(self, head: int) -> datetime | None:
        """The newest stored record time, under the write lock, the store's head being ``head``:
        this tracker's own last write's when no other has written since, else read."""
        if self._last_written is not None and self._last_written[0] == head:
            return self._last_written[1]
        return self.app.last_recorded_at()

    def register_rule(self, fields: dict[str, Any], request: dict | None = None) -> Written:
        rule_id = fields["id"]
        body = {k: v for k, v in fields.items() if k != "id"}
        return self._write(
            request, lambda clock, req: self.app.register_rule(rule_id, body, clock, req), "rule"
        )

    def record_action(self, rule_id: str, action: dict[str, Any], request: dict | None = None) -> Written:
        return self._write(
            request, lambda clock, req: self.app.record_action(rule_id, action, clock, req), "action"
        )

    def correct_action(
        self, rule_id: str, action_id: str, changes: dict[str, Any], reason: str,
        request: dict | None = None,
    ) -> Written:
        return self._write(
            request,
            lambda clock, req: self.app.correct_action(rule_id, action_id, changes, reason, clock, req),
            "correction",
        )

    def retract_action(self, rule_id: str, action_id: str, reason: str, request: dict | None = None) -> Written:
        return self._write(
            request,
            lambda clock, req: self.app.retract_action(rule_id, action_id, reason, clock, req),
            "retraction",
        )

    # Reads -------------------------------------------------------------------------------

    def state(self, rule_id: str, as_of: date | None = None, known_at: datetime | None = None) -> dict:
        at = self.known_at(known_at)
        day = (as_of or utcnow().date()).isoformat()
        # One statement sees one snapshot: no transaction around it (the most frequent read).
        return queries.rule_state(self.readmodel.connection(), rule_id, day, at)

    def history(self, rule_id: str, known_at: datetime | None = None) -> tuple[str, list[dict]]:
        at = self.known_at(known_at)
        with self.readmodel.read() as conn:
            return at, queries.history(conn, rule_id, at, self.app.rule_event_data)

    def state_segments(self, rule_id: str, known_at: datetime | None = None) -> tuple[str, list[dict]]:
        """A rule's states over valid time as known at ``known_at``, for charts."""
        at = self.known_at(known_at)
        with self.readmodel.read() as conn:
            return at, queries.state_segments(conn, rule_id, at)

    def _listing(self, cursor: str | None, given: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A listing's query and where its page starts: from the request (the first page, its
        ``known_at`` settled here) or from its cursor (a later page, the first one's query)."""
        if cursor:
            decoded = ListCursor.decode(cursor)
            query = decoded.query_for(given)
            query["known_at"] = self.known_at(parse_instant(query["known_at"]))
            return query, decoded.after
        query = {name: value.isoformat() if isinstance(value, date) else value
                 for name, value in given.items() if value is not None and name != "known_at"}
        query["known_at"] = self.known_at(given.get("known_at"))
        return query, None

    def state_list(self, as_of: date | None = None, known_at: datetime | None = None, *,
                   limit: int = LIST_LIMIT, cursor: str | None = None,
                   **filters: Any) -> dict[str, Any]:
        """One page of every rule's state on a day, by rule id, as ``GET /api/v1/rules`` answers:
        ``items``, ``next_cursor`` (None on the last page), ``as_of`` and ``known_at``."""
        if not cursor:
            as_of = as_of or utcnow().date()
        query, after = self._listing(cursor, {"as_of": as_of, "known_at": known_at,
                                              **_named(filters, "jurisdiction", "instrument", "q")})
        with self.readmodel.read() as conn:
            items, more = queries.state_page(
                conn, query["as_of"], query["known_at"], limit=min(limit, LIST_MAX_LIMIT),
                after=after, **_filters_of(query))
        next_cursor = ListCursor(query, items[-1]["rule"]["id"]).encode() if more else None
        return {"items": items, "next_cursor": next_cursor, "as_of": query["as_of"],
                "known_at": query["known_at"]}

    def diff_list(self, day_from: date | None, day_to: date | None,
                  known_at: datetime | None = None, *, limit: int = LIST_LIMIT,
                  cursor: str | None = None, **filters: Any) -> dict[str, Any]:
        """One page of the changes between two days, by rule id, as ``GET /api/v1/diff``
        answers: ``changes``, ``next_cursor``, ``from``, ``to`` and ``known_at``."""
        query, after = self._listing(
            cursor, {"from": day_from, "to": day_to, "known_at": known_at,
                     **_named(filters, "jurisdiction", "instrument")})
        with self.readmodel.read() as conn:
            changes, more = queries.diff_page(
                conn, query["from"], query["to"], query["known_at"],
                limit=min(limit, LIST_MAX_LIMIT), after=after, **_filters_of(query))
        next_cursor = ListCursor(query, changes[-1]["rule_id"]).encode() if more else None
        return {"changes": changes, "next_cursor": next_cursor, "from": query["from"],
                "to": query["to"], "known_at": query["known_at"]}

    def iter_states(self, as_of: date, known_at: str, page_size: int = LIST_MAX_LIMIT,
                    **filters: Any) -> Iterator[dict]:
        """Every rule's state on a day as known at ``known_at`` (settled already), a keyset
        page at a time: a whole listing in the memory of one page."""
        return self._walk(lambda conn, after: queries.state_page(
            conn, as_of.isoformat(), known_at, limit=page_size, after=after, **filters),
            lambda state: state["rule"]["id"])

    def iter_changes(self, day_from: date, day_to: date, known_at: str,
                     page_size: int = LIST_MAX_LIMIT, **filters: Any) -> Iterator[dict]:
        """Every change between two days as known at ``known_at`` (settled already), a keyset
        page at a time."""
        return self._walk(lambda conn, after: queries.diff_page(
            conn, day_from.isoformat(), day_to.isoformat(), known_at, limit=page_size, after=after,
            **filters), lambda change: change["rule_id"])

    def _walk(self, page: Callable[[Any, str | None], tuple[list[dict], bool]],
              rule_of: Callable[[dict], str]) -> Iterator[dict]:
        """Every item of a listing paged by rule id, one page read at a time."""
        after = None
        while True:
            with self.readmodel.read() as conn:
                items, more = page(conn, after)
            yield from items
            if not more:
                return
            after = rule_of(items[-1])

    def state_page(self, as_of: date, known_at: str, limit: int, after: str | None = None,
                   before: str | None = None, **filters: Any) -> tuple[list[dict], bool]:
        """A page of rules' states after (or before) a rule id, as known at ``known_at``
        (settled already), and whether more lie that way: for the pages' own links."""
        with self.readmodel.read() as conn:
            return queries.state_page(conn, as_of.isoformat(), known_at, limit=limit,
                                      after=after, before=before, **filters)

    def diff_page(self, day_from: date, day_to: date, known_at: str, limit: int,
                  after: str | None = None, before: str | None = None,
                  **filters: Any) -> tuple[list[dict], bool]:
        """A page of changes after (or before) a rule id, as known at ``known_at`` (settled)."""
        with self.readmodel.read() as conn:
            return queries.diff_page(conn, day_from.isoformat(), day_to.isoformat(), known_at,
                                     limit=limit, after=after, before=before, **filters)

    def state_counts(self, as_of: date, known_at: str, **filters: Any) -> list[tuple[str, str, str, int]]:
        """How many rules are in each (status, jurisdiction, instrument) on a day."""
        with self.readmodel.read() as conn:
            return queries.state_counts(conn, as_of.isoformat(), known_at, **filters)

    def diff_counts(self, day_from: date, day_to: date, known_at: str,
                    **filters: Any) -> list[tuple[str, str, int]]:
        """How many rules changed between two days, by status on each."""
        with self.readmodel.read() as conn:
            return queries.diff_counts(conn, day_from.isoformat(), day_to.isoformat(), known_at,
                                       **filters)

    def actions_between(self, rule_ids: list[str], low: date, high: date,
                        known_at: str) -> dict[str, list[dict]]:
        """The live actions of some rules starting after ``low`` and on or before ``high``, as
        known at ``known_at``, by rule in effective order. Read from the actions as currently
        known; a rule with events recorded after ``known_at`` has its history folded instead."""
        with self.readmodel.read() as conn:
            found = queries.actions_between(conn, rule_ids, low.isoformat(), high.isoformat())
            later = queries.rules_changed_since(conn, rule_ids, known_at)
        for rule_id in later:
            _, history = self.history(rule_id, parse_instant(known_at))
            found[rule_id] = [a for a in history if not a["retracted"]
                              and low < PolicyDate.parse(a["effective"]).start <= high]
        return found

    def timeline(self, **params: Any) -> tuple[list[dict], str | None]:
        self.known_at()
        with self.readmodel.read() as conn:
            return queries.timeline(conn, **params)

    def jurisdictions(self, known_at: datetime | None = None) -> list[str]:
        """The jurisdictions that registered rules name, as known at ``known_at``."""
        at = self.known_at(known_at)
        return queries.jurisdictions(self.readmodel.connection(), at)

    def histories(self, known_at: datetime | None = None,
                  ) -> tuple[str, Iterator[tuple[dict, list[dict]]]]:
        """Every rule registered at ``known_at`` (with its ``registered_at``), in id order,
        with its actions as known then (as :meth:`history` gives them): one rule in memory at
        a time."""
        at = self.known_at(known_at)
        rules = published.iter_rules(self.readmodel.connection, at)

        def each() -> Iterator[tuple[dict, list[dict]]]:
            for rule in rules:
                with self.readmodel.read() as conn:
                    items = queries.history(conn, rule["id"], at, self.app.rule_event_data)
                yield rule, items

        return at, each()

    def rule_facets(self, rule_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The jurisdiction and instrument of each of these rules (those registered by now)."""
        self.known_at()
        with self.readmodel.read() as conn:
            return queries.rule_facets(conn, rule_ids)

    def rules_linking_to(self, rule_id: str, known_at: datetime | None = None,
                         ) -> list[tuple[str, str]]:
        """The rules that link to ``rule_id`` as known at ``known_at``: (id, relation)."""
        at = self.known_at(known_at)
        return queries.rules_linking_to(self.readmodel.connection(), rule_id, at)

    def rule_exists(self, rule_id: str) -> bool:
        at = self.known_at()
        with self.readmodel.read() as conn:
            return queries.rule_exists(conn, rule_id, at)

    # Research downloads ------------------------------------------------------------------

    def spells(self, known_at: datetime | None = None,
               **filters: Any) -> tuple[str, Iterator[dict[str, Any]]]:
        """Every rule's spells as known at ``known_at`` (settled here): the instant, and the
        rows (see :func:`timeline.readmodel.research.iter_spells`), read when iterated."""
        at = self.known_at(known_at)
        return at, self._download(lambda conn: research.iter_spells(conn, at, **filters))

    def panel(self, day_from: date, day_to: date, every: str, known_at: datetime | None = None,
              *, max_rows: int = PANEL_MAX_ROWS,
              **filters: Any) -> tuple[str, Iterator[dict[str, Any]]]:
        """A balanced rule x period panel as known at ``known_at`` (settled here): the instant,
        and the rows (see :func:`timeline.readmodel.research.iter_panel`), read when iterated.
        A panel of more than ``max_rows`` rows is refused before any row is read."""
        if day_from > day_to:
            raise TimelineError(f"from ({day_from}) is after to ({day_to}).",
                                {"from": "must not be after to"})
        if every not in research.PERIODS:
            raise TimelineError(f"every must be one of {', '.join(research.PERIODS)}.",
                                {"every": f"must be one of {', '.join(research.PERIODS)}"})
        at = self.known_at(known_at)
        periods = research.period_count(day_from, day_to, every)
        rules = research.count_rules(self.readmodel.connection(), at, **filters)
        if rules * periods > max_rows:
            raise TimelineError(
                f"This panel would have {rules * periods:,} rows ({rules:,} rules x {periods:,} "
                f"periods), more than {max_rows:,}: ask for fewer periods or fewer rules "
                "(jurisdiction, instrument, rule or q).",
                {"every": f"gives {periods:,} periods for {rules:,} rules, over "
                          f"{max_rows:,} rows"})
        return at, self._download(lambda conn: research.iter_panel(
            conn, at, day_from, day_to, every, **filters))

    def _download(self, rows: Callable[[Any], Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        """``rows`` read in one snapshot on a connection of their own, opened at the first row
        and closed after the last (or when the reader stops): a download may outlast any
        request's use of the tracker's shared connections."""
        conn = connect(self.readmodel.path)
        try:
            # A download reads each page once, in key order: a small page cache is enough.
            conn.execute("PRAGMA cache_size=-8192")
            conn.execute("BEGIN")
            yield from rows(conn)
        finally:
            conn.close()

    # The event log, for feeds and health -----------------------------------------------

    def head(self) -> int:
        """The newest position in the event store (0 when empty)."""
        return self.app.head()

    def events_after(self, position: int, limit: int) -> list[tuple[int, Any]]:
        """Up to ``limit`` stored events after ``position``, as (position, event), in order."""
        return self.app.events_after(position, limit)

    def readmodel_position(self) -> int:
        """The position of the newest event in the read models."""
        return self.readmodel.position()

    def notification_channel(self) -> str:
        """The PostgreSQL channel the event store NOTIFYs on each commit."""
        return self.app.recorder.channel_name

    def check_repeat(self, rule: dict[str, Any]) -> None:
        """Raise :class:`~timeline.domain.errors.Conflict` if loading this rule (and its
        actions) again would conflict with what is stored."""
        self.app.check_repeat(rule)

    # Export and import -------------------------------------------------------------------

    def export(self) -> Iterator[str]:
        """Every stored event as one JSON line, in position order, with its record time."""
        for _, event in self.app.iter_events():
            yield json.dumps(to_record(event), ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def import_records(self, records: Callable[[], Iterable[dict[str, Any]]]) -> int:
        """Restore an export into an empty store: all of it, or nothing if any record is wrong."""
        with self.lock.hold():
            if self.app.head():
                raise StoreNotEmpty("The store already holds events; import needs an empty store.")
            try:
                with CheckBeside(records) as check, collector_paused(), \
                        self.app.import_transaction() as store:
                    try:
                        count = store.insert((from_record(r) for r in records()),
                                             page=IMPORT_PAGE)
                        head = store.head()
                        # The read model is made from the uncommitted events (it replaces one
                        # of another store) and commits once the check has passed; the events
                        # commit right after it.
                        build(self.readmodel, store.events_by_rule(head), head,
                              before_commit=check.verdict)
                    except Exception:
                        check.verdict()  # a record the check refuses: its finding names it
                        raise
            except Exception:
                if self.readmodel.position() > self.app.head():
                    self.readmodel.drop()  # the events did not commit after all
                raise
            self.catch_up()
            return count


def _then(head: int, written: tuple[tuple[int, Any], ...],
          fetch: Callable[[int, int], list[tuple[int, Any]]]) -> Callable[[int, int], Any]:
    """``fetch`` (events after a position), answering from ``written``, the events a write
    stored when the store's head was ``head`` (under the write lock: no one else's came
    between), rather than reading back what it has in hand."""
    def events_after(position: int, limit: int) -> list[tuple[int, Any]]:
        if not written or position < head:
            return fetch(position, limit)
        return [event for event in written if event[0] > position][:limit]

    return events_after


def _named(filters: dict[str, Any], *names: str) -> dict[str, Any]:
    """A listing's filters, every one named (None when not given); an unknown one is an error."""
    unknown = set(filters) - set(names)
    if unknown:
        raise TypeError(f"unknown filters: {sorted(unknown)}")
    return {name: filters.get(name) for name in names}


def _filters_of(query: dict[str, Any]) -> dict[str, Any]:
    """A listing query's filters (all but its days and instant)."""
    return {name: value for name, value in query.items()
            if name not in ("as_of", "from", "to", "known_at")}


# Events per insert when importing (all in one transaction: see import_transaction).
IMPORT_PAGE = 10_000
