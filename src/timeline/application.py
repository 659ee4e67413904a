"""Use cases on the event store: register, record, correct, retract, import.

One method per use case: load the aggregate, call it, save, say what was stored. The caller
holds the store's write lock and passes a :class:`~timeline.writelock.RecordClock`.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator

import orjson
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, JSONTranscoder, StoredEvent, Transcoder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from timeline import event_tables
from timeline.domain.errors import Conflict, InvalidInput, NotFound
from timeline.domain.model import RULE_FIELDS, Rule, fingerprint
from timeline.fastjson import has_long_number
from timeline.writelock import RecordClock


@dataclass(frozen=True)
class Outcome:
    """What a write did: ``created`` is False for a repeat that stored nothing."""

    rule_id: str
    id: str
    version: int
    created: bool
    position: int | None = None
    recorded_at: datetime | None = None
    events: tuple[tuple[int, Rule.Event], ...] = ()  # what it stored, with their positions


MAX_POSITION = 2**63 - 1


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class EventTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, reading what it writes faster.

    What this project stores holds transcoded values only at the top of a state (an event's
    timestamp) or at the top of a snapshot's aggregate state (the rule's creation and last
    change). A state whose every ``"_type_"`` key is at one of those places is parsed by orjson,
    which calls no hook for each object as :mod:`json` does here, and those values are
    transcoded; any other state is read the general way, and every state is written the general
    way, byte for byte as before.
    """

    def decode(self, data: bytes) -> Any:
        # The encoder escapes no letter, so a "_type_" key appears as these bytes; orjson reads
        # an integer past 64 bits as a float, so a run of 19 digits anywhere goes the general way.
        if isinstance(data, bytes) and not has_long_number(data):
            expected = data.count(b'"_type_"')
            if expected:
                try:
                    state = orjson.loads(data)
                except orjson.JSONDecodeError:  # what orjson refuses (NaN, say): the general way
                    return super().decode(data)
                if type(state) is dict:
                    found = self._decode_values(state)
                    inner = state.get("state")
                    if type(inner) is dict:
                        found += self._decode_values(inner)
                    if found == expected:
                        return state
        return super().decode(data)

    def _decode_values(self, values: dict[str, Any]) -> int:
        """Transcode the values of ``values`` that are transcoded objects, in place; how many."""
        count = 0
        for name, value in values.items():
            if type(value) is dict and len(value) == 2 and "_data_" in value:
                transcoding = self.names.get(value.get("_type_"))
                if transcoding is not None:
                    values[name] = transcoding.decode(value["_data_"])
                    count += 1
        return count


# Once more than this many events follow a rule's newest snapshot, a write stores a snapshot of
# the rule as saved: a load (a process's first write to the rule) reads the snapshot and the
# few events after it, so its cost does not grow with the rule's history.
SNAPSHOT_AFTER = 50

# How many actions the rules a process keeps in memory may hold together (see
# PolicyApplication._load): about 600 bytes each, so some 60 MB at most.
RECENT_ACTIONS = 100_000


def _project(rule: Rule | None, events: Iterable[Rule.Event]) -> tuple[Rule | None, int]:
    """``rule`` with ``events`` applied, and how many they were.

    eventsourcing's own project_aggregate asserts each event against a runtime Protocol, a check
    that costs more than applying the event; our events are all Rule.Events.
    """
    applied = 0
    for event in events:
        applied += 1
        rule = event.mutate(rule)
    return rule, applied


class PolicyApplication(Application[str]):
    name = "timeline"
    # Snapshots live in a table of their own: the events, their positions and an export are
    # the same with them or without. Any snapshot holds the state of the events before it, so
    # one taken by any process, at any time, stays right (several processes may write).
    is_snapshotting_enabled = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Rules as this process last saved them, oldest first (see _load). Only writers use it,
        # one at a time: they hold the store's write lock.
        # Each with how many events follow its newest snapshot (see _save).
        self._recent: dict[str, tuple[Rule, int]] = {}
        self._recent_actions = 0

    def construct_transcoder(self) -> Transcoder:
        transcoder = EventTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def get_rule(self, rule_id: str) -> Rule:
        """The rule as stored (its newest snapshot and the events after it)."""
        return self._stored(rule_id)[0]

    def _load(self, rule_id: str) -> tuple[Rule, int]:
        """The rule for a write, and how many stored events follow its newest snapshot (about:
        the snapshot counts as one).

        A rule this process saved lately comes from memory, with only the events stored after
        it applied (another process may have written some): a write to a long rule then decodes
        no snapshot. It leaves memory until saved again (see _keep), so a command that fails
        halfway leaves nothing behind.
        """
        recent, since = self._recent.pop(rule_id, (None, 0))
        if recent is None:
            return self._stored(rule_id)
        self._recent_actions -= len(recent.actions)
        rule, applied = _project(recent, self.events.get(rule_id, gt=recent.version))
        return rule, since + applied

    def _stored(self, rule_id: str) -> tuple[Rule, int]:
        """The rule from its newest snapshot and the events after it, and how many they were."""
        applied = 0

        def project(rule: Rule | None, events: Iterable[Rule.Event]) -> Rule | None:
            nonlocal applied
            rule, applied = _project(rule, events)
            return rule

        try:
            rule = self.repository.get(rule_id, projector_func=project)
        except AggregateNotFoundError:
            raise NotFound(f"No rule {rule_id!r} is registered.") from None
        return rule, applied

    def _keep(self, rule: Rule, since: int) -> None:
        """Keep a rule as just saved (or found unchanged) for the next write to it, with how
        many events follow its newest snapshot."""
        self._recent[rule.id] = (rule, since)
        self._recent_actions += len(rule.actions)
        while self._recent_actions > RECENT_ACTIONS:
            # The one left alone longest leaves first.
            oldest, _ = self._recent.pop(next(iter(self._recent)))
            self._recent_actions -= len(oldest.actions)

    def _snapshot(self, rule: Rule) -> None:
        """Store the rule's state as just saved."""
        assert self.snapshots is not None
        try:
            self.snapshots.put([Rule.Snapshot.take(rule)])
        except IntegrityError:
            pass  # the same version's snapshot is stored already

    def rule_exists(self, rule_id: str) -> bool:
        return rule_id in self.repository

    def _save(self, rule: Rule, ident: str, since: int = 0) -> Outcome:
        """Save the rule's new events; ``since``: how many stored ones follow its newest
        snapshot."""
        try:
            recordings = self.save(rule)
        except IntegrityError:
            raise Conflict(
                f"Rule {rule.id!r} was changed by another writer; try again.",
            ) from None
        since += len(recordings)
        if since > SNAPSHOT_AFTER:
            self._snapshot(rule)
            since = 0
        self._keep(rule, since)
        last = recordings[-1]
        return Outcome(
            rule_id=rule.id,
            id=ident,
            version=rule.version,
            created=True,
            position=last.notification.id,
            recorded_at=last.domain_event.timestamp,
            events=tuple((r.notification.id, r.domain_event) for r in recordings),
        )

    def check_repeat(self, rule: dict[str, Any]) -> None:
        """Raise :class:`Conflict` if loading this rule and its actions again would conflict."""
        if not self.rule_exists(rule["id"]):
            return
        existing = self.get_rule(rule["id"])
        if fingerprint(existing.fields) != fingerprint({k: rule[k] for k in RULE_FIELDS}):
            raise Conflict(f"Rule {rule['id']!r} is already registered with other fields.",
                           {"id": "already registered with other fields"})
        for action in rule.get("actions", []):
            if existing.has_other(action):
                raise Conflict(f"Action {action['id']!r} already exists with other fields.",
                               {"id": f"action {action['id']!r} already exists with other fields"})

    def register_rule(
        self, rule_id: str, fields: dict[str, Any], clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        """Register a rule; a repeat with identical fields stores nothing, other fields conflict."""
        for link in fields.get("links", []):
            if not self.rule_exists(link["rule"]):
                raise InvalidInput(
                    "A link must name a registered rule.",
                    {"links": f"no rule {link['rule']!r} is registered"},
                )
        if self.rule_exists(rule_id):
            existing = self.get_rule(rule_id)
            if fingerprint(existing.fields) == fingerprint({k: fields[k] for k in RULE_FIELDS}):
                return Outcome(rule_id, rule_id, 1, created=False)
            raise Conflict(
                f"Rule {rule_id!r} is already registered with other fields.",
                {"id": "already registered with other fields"},
            )
        rule = Rule.register(rule_id, fields, clock.next(), request)
        return self._save(rule, rule_id)

    def record_action(
        self, rule_id: str, action: dict[str, Any], clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        rule, since = self._load(rule_id)
        action = dict(action)
        if not action.get("id"):
            action["id"] = new_id(action["kind"])
        if not rule.record(action, clock.next(), request):
            self._keep(rule, since)
            return Outcome(rule_id, action["id"], rule.action_version(action["id"]), False)
        return self._save(rule, action["id"], since)

    def correct_action(
        self,
        rule_id: str,
        action_id: str,
        changes: dict[str, Any],
        reason: str,
        clock: RecordClock,
        request: dict | None = None,
    ) -> Outcome:
        rule, since = self._load(rule_id)
        correction_id = new_id("correction")
        rule.correct(correction_id, action_id, changes, reason, clock.next(), request)
        return self._save(rule, correction_id, since)

    def retract_action(
        self, rule_id: str, action_id: str, reason: str, clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        rule, since = self._load(rule_id)
        retraction_id = new_id("retraction")
        rule.retract(retraction_id, action_id, reason, clock.next(), request)
        return self._save(rule, retraction_id, since)

    # Reading the log -------------------------------------------------------------------------

    def head(self) -> int:
        """The newest position in the store (0 when empty).

        Asked on every read, to know the read models are caught up. On SQLite it is one indexed
        lookup on a plain read-only connection of this thread: the library's own path takes a
        pooled connection and a transaction, several times slower for this one number.
        """
        try:
            conn = self._head_local.conn  # this thread's, once opened: the usual case
        except AttributeError:
            conn = None
        if conn is None:
            conn = self._head_connection()
            if conn is None:
                return self.recorder.max_notification_id() or 0
        return conn.execute(self._head_sql).fetchone()[0] or 0

    def head_query(self) -> str | None:
        """The statement giving the store's head, for a reader to run on a session of its own
        (PostgreSQL); None where :meth:`head` has a faster way (SQLite)."""
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            return None
        return self.events_statement(_HEAD).as_string(None)

    def events_statement(self, template: str) -> Any:
        """A statement on the store's events table, for this store: ``template`` names the table
        ``{table}`` and the position column ``{position}``, and takes parameters as ``?``."""
        return event_tables.statement(self.recorder, template)

    def close(self) -> None:
        local = self.__dict__.get("_head_local")
        conn = getattr(local, "conn", None) if local is not None else None
        if conn is not None:
            conn.close()
            local.conn = None
        super().close()

    def _head_connection(self) -> sqlite3.Connection | None:
        local = self.__dict__.setdefault("_head_local", threading.local())
        conn = getattr(local, "conn", None)
        if conn is None:
            recorder = self.recorder
            if not isinstance(recorder, SQLiteApplicationRecorder):
                return None
            pool = recorder.datastore.pool
            if pool.is_sqlite_memory_mode:
                return None
            self._head_sql = self.events_statement(_HEAD)
            conn = local.conn = sqlite3.connect(f"file:{pool.db_name}?mode=ro", uri=True,
                                                check_same_thread=False)
        return conn

    def events_after(self, position: int, limit: int) -> list[tuple[int, Rule.Event]]:
        """Stored events with a position greater than ``position``, in order."""
        if position >= MAX_POSITION:
            return []  # past any position a store can hold (64-bit in SQLite and PostgreSQL)
        notifications = self.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def iter_events(self, after: int = 0, batch: int = 1000) -> Iterator[tuple[int, Rule.Event]]:
        while True:
            page = self.events_after(after, batch)
            if not page:
                return
            yield from page
            after = page[-1][0]

    def events_by_rule(self, up_to: int, cursor: Any = None) -> Iterator[tuple[int, Rule.Event]]:
        """Every event up to position ``up_to`` with its position, each rule's events together
        in version order (rules in id order): how a whole read model is made in one pass.

        Read along the store's own key (originator id, version), a page at a time; on
        ``cursor`` when given (inside an open transaction: see :meth:`import_transaction`).
        """
        statement = self.events_statement(
            "SELECT {position}, originator_id, originator_version, topic, state FROM {table} "
            "WHERE {position} <= ? AND (originator_id, originator_version) > (?, ?) "
            "ORDER BY originator_id, originator_version LIMIT ?")

        def fetch(params: tuple) -> list[tuple]:
            if cursor is not None:
                return event_tables.fetch(cursor, statement, params)
            with self.recorder.datastore.transaction(commit=False) as own:
                return event_tables.fetch(own, statement, params)

        to_event = self.mapper.to_domain_event
        after: tuple[str, int] = ("", 0)
        while True:
            rows = fetch((up_to, *after, EVENTS_PAGE))
            for position, originator_id, version, topic, state in rows:
                yield position, to_event(StoredEvent(
                    originator_id=originator_id, originator_version=version, topic=topic,
                    state=bytes(state)))
            if len(rows) < EVENTS_PAGE:
                return
            after = (rows[-1][1], rows[-1][2])

    def rule_event_data(self, rule_id: str, up_to: int) -> dict[int, dict[str, Any]]:
        """The data of a rule's events up to version ``up_to``, by version, in the public shape.

        The read models keep each event's place and record time; its data is read from here.
        """
        from timeline.events import event_data

        stored = self.recorder.select_events(rule_id, lte=up_to)
        return {s.originator_version: event_data(self.mapper.to_domain_event(s)) for s in stored}

    def last_recorded_at(self) -> datetime | None:
        head = self.head()
        if not head:
            return None
        page = self.recorder.select_notifications(start=head, limit=1)
        return self.mapper.to_domain_event(page[0]).timestamp if page else None

    @contextmanager
    def import_transaction(self) -> Iterator[ImportTransaction]:
        """One transaction of the store for a whole import: nothing is seen, or kept after a
        crash, until all of it commits as the block ends (an exception rolls it back)."""
        recorder = self.recorder
        with recorder.datastore.transaction(commit=True) as cursor:
            if not isinstance(recorder, SQLiteApplicationRecorder):
                # The transaction waits between statements while the read model is built:
                # PostgreSQL must not end it as idle meanwhile.
                cursor.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            else:
                # Events arrive in record order but are keyed by rule too: a page cache that
                # holds that index keeps a large import from reading its pages over and over.
                cursor.execute("PRAGMA cache_size=-262144")
            yield ImportTransaction(self, cursor)
        if isinstance(recorder, SQLiteApplicationRecorder) and not \
                recorder.datastore.pool.is_sqlite_memory_mode:
            # The whole import went through the write-ahead log: empty it (see the writer's).
            with closing(sqlite3.connect(recorder.datastore.pool.db_name, timeout=30)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class ImportTransaction:
    """What an import does inside its one transaction of the store (see import_transaction)."""

    def __init__(self, app: PolicyApplication, cursor: Any):
        self.app = app
        self.cursor = cursor

    def insert(self, events: Iterable[Rule.Event], page: int = 10_000) -> int:
        """Insert ready-made events a page at a time; how many."""
        to_stored = self.app.mapper.to_stored_event
        count = 0
        batch: list[StoredEvent] = []
        for event in events:
            batch.append(to_stored(event))
            if len(batch) >= page:
                event_tables.insert_in_transaction(self.app.recorder, self.cursor, batch)
                count += len(batch)
                batch = []
        if batch:
            event_tables.insert_in_transaction(self.app.recorder, self.cursor, batch)
            count += len(batch)
        return count

    def head(self) -> int:
        """The newest position, as this transaction sees it."""
        rows = event_tables.fetch(self.cursor, self.app.events_statement(_HEAD), ())
        return rows[0][0] or 0

    def events_by_rule(self, up_to: int) -> Iterator[tuple[int, Rule.Event]]:
        """The events of this transaction, uncommitted ones included, rule by rule."""
        return self.app.events_by_rule(up_to, cursor=self.cursor)


# Events read at a time, in the order of events_by_rule.
EVENTS_PAGE = 10_000

# The store's head: its newest position (see PolicyApplication.events_statement).
_HEAD = "SELECT max({position}) FROM {table}"
