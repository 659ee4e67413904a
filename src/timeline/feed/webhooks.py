"""Webhook endpoints and their delivery state, stored in the event store's own database.

Every process that serves or delivers sees the same endpoints, and a restarted worker resumes
where the last one stopped. Delivery is at least once and not in order, so one event an
endpoint refuses never holds back the others:

- each endpoint keeps a cursor, ``handed_through``: every event up to it that the endpoint
  wants has been given a try of its own (a row in ``timeline_webhook_tries``). The cursor moves
  by compare-and-set, so two workers never hand out the same events twice;
- each try has its own schedule (attempts, next try) and is claimed with a lease: a single
  conditional UPDATE, which also keeps the tries in flight to one endpoint under a cap. Several
  workers, in one process or many, never send one try at the same time, and a crashed worker's
  lease simply runs out;
- every try made is kept in a short log (the newest ``KEEP_ATTEMPTS`` per endpoint), and an
  event given up on after the last try is listed as a failure.

A replay sets a second cursor over events already handed out, which hands them out again.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from timeline.config import Settings
from timeline.domain.dates import format_instant
from timeline.feed.cloudevents import sequence
from timeline.feed.filters import EventFilter
from timeline.feed.urlsafety import Resolver, check_url, system_resolver
from timeline.database import connect_store_database, create_tables, table_exists
from timeline.writelock import utcnow

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the Standard Webhooks spec asks for 24 to 64
KEEP_ATTEMPTS = 200  # tries kept in each endpoint's log

_ENDPOINTS = "timeline_webhook_endpoints"
_COLUMNS = (
    "id", "url", "types", "rules", "jurisdictions", "instruments", "created_at", "start_after",
    "handed_through", "replay_after", "replay_through", "failing_since", "disabled_at",
    "disabled_reason", "last_attempt_at", "last_status", "last_error", "delivered_count",
    "failed_count",
)

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {_ENDPOINTS} ("
    " id TEXT PRIMARY KEY,"
    " url TEXT NOT NULL,"
    # Filters, each a JSON list; an empty list means no filter of that kind.
    " types TEXT NOT NULL,"
    " rules TEXT NOT NULL,"
    " jurisdictions TEXT NOT NULL,"
    " instruments TEXT NOT NULL,"
    " secret TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " start_after BIGINT NOT NULL,"  # the head when registered: later events are sent
    " handed_through BIGINT NOT NULL,"  # every wanted event up to here has a try
    " replay_after BIGINT,"  # a replay under way: events after this ...
    " replay_through BIGINT,"  # ... up to this are handed out again
    " failing_since DOUBLE PRECISION,"  # epoch seconds of the first failed try since a success
    " disabled_at TEXT,"
    " disabled_reason TEXT,"
    " last_attempt_at TEXT,"
    " last_status INTEGER,"
    " last_error TEXT,"
    " delivered_count BIGINT NOT NULL DEFAULT 0,"
    " failed_count BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS timeline_webhook_tries ("
    " webhook_id TEXT NOT NULL,"
    " position BIGINT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"  # tries made so far
    " next_try_at DOUBLE PRECISION NOT NULL,"  # epoch seconds
    " lease_owner TEXT,"
    " lease_until DOUBLE PRECISION,"
    " PRIMARY KEY (webhook_id, position))",
    "CREATE INDEX IF NOT EXISTS timeline_webhook_tries_due ON timeline_webhook_tries (next_try_at)",
    "CREATE TABLE IF NOT EXISTS timeline_webhook_attempts ("
    " id {serial},"  # in the order written: newest first, and the oldest pruned
    " webhook_id TEXT NOT NULL,"
    " position BIGINT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " message_id TEXT NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " status INTEGER,"
    " error TEXT,"
    " at TEXT NOT NULL,"
    " next_try_at DOUBLE PRECISION)",
    "CREATE INDEX IF NOT EXISTS timeline_webhook_attempts_by_endpoint"
    " ON timeline_webhook_attempts (webhook_id, id)",
    "CREATE TABLE IF NOT EXISTS timeline_webhook_failures ("
    " webhook_id TEXT NOT NULL,"
    " position BIGINT NOT NULL,"
    " message_id TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " last_status INTEGER,"
    " last_error TEXT,"
    " failed_at TEXT NOT NULL,"
    " PRIMARY KEY (webhook_id, position))",
)

# Stores made before deliveries were unordered kept one cursor and one pending event per
# endpoint in ``timeline_webhooks``: their endpoints move to the new table, the pending event
# becomes a try, and the old table goes.
_OLD_ENDPOINTS = "timeline_webhooks"
_MIGRATE = (
    _CREATE[0],
    _CREATE[1],
    "INSERT INTO timeline_webhook_tries (webhook_id, position, attempts, next_try_at)"
    f" SELECT id, pending_position, attempts, next_try_at FROM {_OLD_ENDPOINTS}"
    " WHERE pending_position IS NOT NULL AND disabled_at IS NULL",
    f"INSERT INTO {_ENDPOINTS} (id, url, types, rules, jurisdictions, instruments, secret,"
    " created_at, start_after, handed_through, disabled_at, disabled_reason, last_attempt_at,"
    " last_status, last_error, delivered_count, failed_count)"
    " SELECT id, url, types, '[]', '[]', '[]', secret, created_at, start_after,"
    " COALESCE(pending_position, delivered_through), disabled_at, disabled_reason,"
    f" last_attempt_at, last_status, last_error, delivered_count, failed_count FROM {_OLD_ENDPOINTS}",
    f"DROP TABLE {_OLD_ENDPOINTS}",
)


@dataclass(frozen=True)
class Try:
    """One event to send to one endpoint, claimed by a worker."""

    webhook_id: str
    position: int
    attempts: int  # tries made before this one


@dataclass(frozen=True)
class Pending:
    count: int
    position: int | None  # the oldest event still to be settled
    attempts: int
    next_try_at: float | None


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    types: tuple[str, ...]
    rules: tuple[str, ...]
    jurisdictions: tuple[str, ...]
    instruments: tuple[str, ...]
    created_at: str
    start_after: int
    handed_through: int
    replay_after: int | None
    replay_through: int | None
    failing_since: float | None
    disabled_at: str | None
    disabled_reason: str | None
    last_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    delivered_count: int
    failed_count: int
    secret: str = field(default="", repr=False)
    pending: Pending = field(default=Pending(0, None, 0, None))

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @property
    def filter(self) -> EventFilter:
        return EventFilter(frozenset(self.types), frozenset(self.rules),
                           frozenset(self.jurisdictions), frozenset(self.instruments))

    @property
    def settled_through(self) -> int:
        """Every event up to here is delivered or given up on (or not wanted)."""
        if self.pending.position is not None:
            return min(self.handed_through, self.pending.position - 1)
        return self.handed_through

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        pending = None
        if self.pending.count:
            pending = {
                "count": self.pending.count,
                "position": self.pending.position,
                "attempts": self.pending.attempts,
                "next_try_at": _instant(self.pending.next_try_at),
            }
        last = None
        if self.last_attempt_at is not None:
            last = {"at": self.last_attempt_at, "status": self.last_status, "error": self.last_error}
        return {
            "id": self.id,
            "url": self.url,
            "types": list(self.types),
            "rules": list(self.rules),
            "jurisdictions": list(self.jurisdictions),
            "instruments": list(self.instruments),
            "created_at": self.created_at,
            "active": self.active,
            "disabled_at": self.disabled_at,
            "disabled_reason": self.disabled_reason,
            "failing_since": _instant(self.failing_since),
            "after": self.start_after,
            "delivered_through": self.settled_through,
            "delivered": self.delivered_count,
            "failed": self.failed_count,
            "pending": pending,
            "replaying": self.replay_after is not None,
            "last_attempt": last,
        }


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _instant(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return format_instant(datetime.fromtimestamp(epoch, timezone.utc))


def _now_text() -> str:
    return format_instant(utcnow())


class WebhookStore:
    """Endpoints and delivery state; plain SQL that runs on SQLite and on PostgreSQL alike."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()
        self._create()

    # Connections ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        """This thread's connection (senders settle many tries each: one connection apiece)."""
        conn, pid = getattr(self._local, "conn", None), getattr(self._local, "pid", None)
        if conn is not None and pid == os.getpid():
            return conn
        conn = connect_store_database(self.settings)
        if not self.settings.on_postgres:
            # In WAL mode a commit then waits for no disk flush; a crash of the machine may lose
            # the last settled tries, which are then sent again: delivery is at least once.
            conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _forget(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            yield conn
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            finally:
                self._forget()  # a broken connection is made again on the next use
            raise

    def _sql(self, statement: str) -> str:
        """Statements are written with ``?``; PostgreSQL's driver wants ``%s``."""
        return statement.replace("?", "%s") if self.settings.on_postgres else statement

    def _run(self, conn: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(statement), tuple(params))

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        with self._transaction() as conn:
            return self._run(conn, statement, params).rowcount

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._transaction() as conn:
            return list(self._run(conn, statement, params).fetchall())

    def _create(self) -> None:
        def migrate(conn: Any) -> None:
            if table_exists(self.settings, conn, _OLD_ENDPOINTS):
                for statement in _MIGRATE:
                    conn.execute(statement)

        serial = ("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if self.settings.on_postgres
                  else "INTEGER PRIMARY KEY")
        create_tables(self.settings, [statement.replace("{serial}", serial) for statement in _CREATE],
                      migrate)

    # Managing endpoints ------------------------------------------------------------------------

    def register(
        self,
        url: str,
        types: Sequence[str] | None,
        start_after: int,
        resolver: Resolver = system_resolver,
        *,
        rules: Sequence[str] | None = None,
        jurisdictions: Sequence[str] | None = None,
        instruments: Sequence[str] | None = None,
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret (shown once).

        :class:`RefusedURL` for a refused URL; :class:`InvalidInput` for a filter naming an
        unknown type, code or instrument (the schema checks them too: the store never holds a
        filter it cannot match).
        """
        check_url(url, self.settings.webhook_allow_private, resolver)
        lists = {name: list(dict.fromkeys(values or ()))  # keep order, drop repeats
                 for name, values in (("types", types), ("rules", rules),
                                      ("jurisdictions", jurisdictions), ("instruments", instruments))}
        EventFilter.of(**lists)
        ident = "wh_" + secrets.token_hex(8)
        secret = new_secret()
        self._execute(
            f"INSERT INTO {_ENDPOINTS} (id, url, types, rules, jurisdictions, instruments, secret,"
            " created_at, start_after, handed_through, delivered_count, failed_count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            (ident, url, json.dumps(lists["types"]), json.dumps(lists["rules"]),
             json.dumps(lists["jurisdictions"]), json.dumps(lists["instruments"]), secret,
             _now_text(), start_after, start_after),
        )
        endpoint = self.get(ident)
        assert endpoint is not None
        return endpoint, secret

    def _select(self, where: str = "", params: Sequence[Any] = (),
                with_pending: bool = True) -> list[Endpoint]:
        with self._transaction() as conn:
            rows = self._run(conn, f"SELECT {', '.join(_COLUMNS)}, secret FROM {_ENDPOINTS} {where}",
                             params).fetchall()
            ids = [row[0] for row in rows]
            pending = self._pending(conn, ids) if ids and with_pending else {}
        endpoints = []
        for row in rows:
            values = dict(zip(_COLUMNS + ("secret",), row))
            for name in ("types", "rules", "jurisdictions", "instruments"):
                values[name] = tuple(json.loads(values[name]))
            values["pending"] = pending.get(values["id"], Pending(0, None, 0, None))
            endpoints.append(Endpoint(**values))
        return endpoints

    def _pending(self, conn: Any, ids: Sequence[str]) -> dict[str, Pending]:
        marks = ", ".join("?" * len(ids))
        counts = {row[0]: (row[1], row[2]) for row in self._run(
            conn, "SELECT webhook_id, COUNT(*), MIN(position) FROM timeline_webhook_tries"
                  f" WHERE webhook_id IN ({marks}) GROUP BY webhook_id", ids)}
        found = {}
        for webhook_id, (count, oldest) in counts.items():
            row = self._run(
                conn, "SELECT attempts, next_try_at FROM timeline_webhook_tries"
                      " WHERE webhook_id = ? AND position = ?", (webhook_id, oldest)).fetchone()
            if row is not None:  # else settled in between (SQLite reads outside a transaction)
                found[webhook_id] = Pending(count, oldest, row[0], row[1])
        return found

    def get(self, webhook_id: str) -> Endpoint | None:
        found = self._select("WHERE id = ?", (webhook_id,))
        return found[0] if found else None

    def list(self) -> list[Endpoint]:
        return self._select("ORDER BY created_at, id")

    def delete(self, webhook_id: str) -> bool:
        with self._transaction() as conn:
            for table in ("timeline_webhook_failures", "timeline_webhook_tries",
                          "timeline_webhook_attempts"):
                self._run(conn, f"DELETE FROM {table} WHERE webhook_id = ?", (webhook_id,))
            return self._run(conn, f"DELETE FROM {_ENDPOINTS} WHERE id = ?",
                             (webhook_id,)).rowcount == 1

    def failures(self, webhook_id: str) -> list[dict[str, Any]]:
        """Events given up on after the last try, oldest first."""
        rows = self._query(
            "SELECT position, message_id, attempts, last_status, last_error, failed_at"
            " FROM timeline_webhook_failures WHERE webhook_id = ? ORDER BY position",
            (webhook_id,),
        )
        keys = ("position", "message_id", "attempts", "last_status", "last_error", "failed_at")
        return [dict(zip(keys, row)) for row in rows]

    def attempts(self, webhook_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The endpoint's recent tries, newest first."""
        rows = self._query(
            "SELECT event_id, position, message_id, attempt, status, error, at, next_try_at"
            " FROM timeline_webhook_attempts WHERE webhook_id = ?"
            " ORDER BY id DESC LIMIT ?",
            (webhook_id, limit),
        )
        return [{
            "event_id": event_id, "sequence": sequence(position), "webhook_id": message_id,
            "attempt": attempt, "status": status, "error": error, "at": at,
            "next_try_at": _instant(next_try_at),
        } for event_id, position, message_id, attempt, status, error, at, next_try_at in rows]

    def replay(self, webhook_id: str, after: int) -> bool:
        """Hand every wanted event after ``after`` out again (up to the cursor: later ones are
        on their way anyway); False if there is no such endpoint."""
        return self._execute(
            f"UPDATE {_ENDPOINTS} SET"
            " replay_after = CASE WHEN replay_after IS NULL OR ? < replay_after"
            "  THEN ? ELSE replay_after END,"
            " replay_through = handed_through WHERE id = ?",
            (after, after, webhook_id),
        ) == 1

    def backlog(self, head: int) -> dict[str, int]:
        """Per active endpoint, the events not yet settled: tries pending, and the positions up
        to ``head`` not yet looked at (counted as events; they are usually none, as the
        cursor follows the head within a poll)."""
        rows = self._query(
            f"SELECT e.id, e.handed_through, COUNT(t.position) FROM {_ENDPOINTS} e"
            " LEFT JOIN timeline_webhook_tries t ON t.webhook_id = e.id"
            " WHERE e.disabled_at IS NULL GROUP BY e.id, e.handed_through"
        )
        return {ident: int(pending) + max(0, head - int(through)) for ident, through, pending in rows}

    # Handing events out ----------------------------------------------------------------------

    def behind(self, head: int) -> list[Endpoint]:
        """Active endpoints with events to hand out: new ones up to ``head``, or a replay."""
        return self._select(
            "WHERE disabled_at IS NULL AND (handed_through < ? OR replay_after IS NOT NULL)"
            " ORDER BY id", (head,), with_pending=False)

    def target(self, webhook_id: str) -> tuple[str, str] | None:
        """Where an active endpoint's messages go and what signs them: its URL and secret."""
        rows = self._query(f"SELECT url, secret FROM {_ENDPOINTS} WHERE id = ? AND disabled_at IS NULL",
                           (webhook_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def hand_out(self, webhook_id: str, seen: int, through: int, positions: Sequence[int],
                 now: float) -> bool:
        """Give ``positions`` (the wanted events in ``(seen, through]``) a try each, due now,
        and move the cursor from ``seen`` to ``through``; False if another worker moved it first."""
        return self._hand_out(webhook_id, "handed_through", seen, through, positions, now)

    def hand_out_replay(self, webhook_id: str, seen: int, through: int, positions: Sequence[int],
                        now: float, done: bool) -> bool:
        """The same for a replay's cursor; ``done`` ends the replay."""
        return self._hand_out(webhook_id, "replay_after", seen, None if done else through,
                              positions, now)

    def _hand_out(self, webhook_id: str, cursor: str, seen: int, through: int | None,
                  positions: Sequence[int], now: float) -> bool:
        with self._transaction() as conn:
            moved = self._run(
                conn, f"UPDATE {_ENDPOINTS} SET {cursor} = ?"
                      + (", replay_through = NULL" if through is None else "")
                      + f" WHERE id = ? AND {cursor} = ?", (through, webhook_id, seen),
            ).rowcount == 1
            if moved and positions:
                statement = self._sql(
                    "INSERT INTO timeline_webhook_tries (webhook_id, position, attempts, next_try_at)"
                    " VALUES (?, ?, 0, ?) ON CONFLICT (webhook_id, position) DO NOTHING")
                conn.cursor().executemany(statement, [(webhook_id, p, now) for p in positions])
            return moved

    # Tries -------------------------------------------------------------------------------------

    def claim(self, owner: str, now: float, lease_until: float, limit: int,
              in_flight: int) -> list[Try]:
        """Take up to ``limit`` due tries of active endpoints, at most ``in_flight`` at a time to
        one endpoint that answers, and one at a time to an endpoint that is failing or has not
        answered yet: a slow or silent endpoint holds one sender, not many.

        Each is taken by one conditional UPDATE that counts the endpoint's live leases: on
        PostgreSQL the endpoints' rows are locked first (in id order), so concurrent claimers
        count in turn; on SQLite writers take turns anyway.
        """
        if limit <= 0:
            return []
        # The oldest due tries of each endpoint, as many as it has room for: an endpoint at its
        # cap, with many tries due, takes no place from the others.
        candidates = self._query(
            "SELECT webhook_id, position FROM ("
            " SELECT t.webhook_id, t.position, t.next_try_at,"
            "  ROW_NUMBER() OVER (PARTITION BY t.webhook_id ORDER BY t.next_try_at, t.position) AS n,"
            "  CASE WHEN e.failing_since IS NULL AND e.delivered_count > 0 THEN ? ELSE 1 END"
            "   - COALESCE(f.flying, 0) AS room"
            " FROM timeline_webhook_tries t"
            f" JOIN {_ENDPOINTS} e ON e.id = t.webhook_id"
            " LEFT JOIN (SELECT webhook_id, COUNT(*) AS flying FROM timeline_webhook_tries"
            "  WHERE lease_until >= ? GROUP BY webhook_id) f ON f.webhook_id = t.webhook_id"
            " WHERE e.disabled_at IS NULL AND t.next_try_at <= ?"
            " AND (t.lease_owner IS NULL OR t.lease_until < ?)"
            ") ranked WHERE n <= room ORDER BY next_try_at, position LIMIT ?",
            (in_flight, now, now, now, limit * 2),
        )
        if not candidates:
            return []
        claimed: list[Try] = []
        with self._transaction() as conn:
            if self.settings.on_postgres:
                ids = sorted({webhook_id for webhook_id, _ in candidates})
                self._run(conn, f"SELECT id FROM {_ENDPOINTS} WHERE id IN ({', '.join('?' * len(ids))})"
                                " ORDER BY id FOR UPDATE", ids)
            for webhook_id, position in candidates:
                row = self._run(
                    conn,
                    "UPDATE timeline_webhook_tries SET lease_owner = ?, lease_until = ?"
                    " WHERE webhook_id = ? AND position = ? AND next_try_at <= ?"
                    " AND (lease_owner IS NULL OR lease_until < ?)"
                    " AND (SELECT COUNT(*) FROM timeline_webhook_tries l WHERE l.webhook_id = ?"
                    "  AND l.lease_until >= ?)"
                    f" < (SELECT CASE WHEN failing_since IS NULL AND delivered_count > 0 THEN ? ELSE 1 END"
                    f"  FROM {_ENDPOINTS}"
                    "  WHERE id = ? AND disabled_at IS NULL)"
                    " RETURNING attempts",
                    (owner, lease_until, webhook_id, position, now, now, webhook_id, now,
                     in_flight, webhook_id),
                ).fetchall()
                if row:
                    claimed.append(Try(webhook_id, position, row[0][0]))
                    if len(claimed) == limit:
                        break
        return claimed

    def release(self, tried: Try, owner: str) -> bool:
        """Give a try back untried (to be taken again at once)."""
        return self._execute(
            "UPDATE timeline_webhook_tries SET lease_owner = NULL, lease_until = NULL"
            " WHERE webhook_id = ? AND position = ? AND lease_owner = ?",
            (tried.webhook_id, tried.position, owner),
        ) == 1

    def _log(self, conn: Any, tried: Try, event_id: str, message_id: str, status: int | None,
             error: str | None, now: float, next_try_at: float | None) -> None:
        self._run(conn,
                  "INSERT INTO timeline_webhook_attempts (webhook_id, position, event_id, message_id,"
                  " attempt, status, error, at, next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (tried.webhook_id, tried.position, event_id, message_id, tried.attempts + 1,
                   status, error, _instant(now), next_try_at))
        self._run(conn,
                  "DELETE FROM timeline_webhook_attempts WHERE webhook_id = ? AND id <"
                  " (SELECT id FROM timeline_webhook_attempts WHERE webhook_id = ?"
                  "  ORDER BY id DESC LIMIT 1 OFFSET ?)",
                  (tried.webhook_id, tried.webhook_id, KEEP_ATTEMPTS - 1))

    def delivered(self, tried: Try, owner: str, event_id: str, message_id: str, status: int,
                  now: float) -> bool:
        with self._transaction() as conn:
            if self._run(conn, "DELETE FROM timeline_webhook_tries WHERE webhook_id = ?"
                               " AND position = ? AND lease_owner = ?",
                         (tried.webhook_id, tried.position, owner)).rowcount != 1:
                return False  # the lease ran out and another worker has it
            self._run(conn, f"UPDATE {_ENDPOINTS} SET delivered_count = delivered_count + 1,"
                            " failing_since = NULL, last_attempt_at = ?, last_status = ?,"
                            " last_error = NULL WHERE id = ?",
                      (_instant(now), status, tried.webhook_id))
            self._log(conn, tried, event_id, message_id, status, None, now, None)
            return True

    def _failed(self, conn: Any, tried: Try, status: int | None, error: str | None, now: float,
                disable_after: float, extra: str = "") -> None:
        """Note a failed try on the endpoint; one that has failed every try for
        ``disable_after`` seconds is disabled."""
        reason = f"every try failed for {disable_after / 86400:g} days"
        self._run(conn,
                  f"UPDATE {_ENDPOINTS} SET failing_since = COALESCE(failing_since, ?),"
                  " disabled_reason = CASE WHEN disabled_at IS NULL AND failing_since <= ?"
                  "  THEN ? ELSE disabled_reason END,"
                  " disabled_at = CASE WHEN disabled_at IS NULL AND failing_since <= ?"
                  "  THEN ? ELSE disabled_at END,"
                  f" last_attempt_at = ?, last_status = ?, last_error = ?{extra} WHERE id = ?",
                  (now, now - disable_after, reason, now - disable_after, _instant(now),
                   _instant(now), status, error, tried.webhook_id))

    def retry_later(self, tried: Try, owner: str, event_id: str, message_id: str,
                    status: int | None, error: str | None, now: float, next_try_at: float,
                    disable_after: float) -> bool:
        with self._transaction() as conn:
            if self._run(conn, "UPDATE timeline_webhook_tries SET attempts = ?, next_try_at = ?,"
                               " lease_owner = NULL, lease_until = NULL"
                               " WHERE webhook_id = ? AND position = ? AND lease_owner = ?",
                         (tried.attempts + 1, next_try_at, tried.webhook_id, tried.position,
                          owner)).rowcount != 1:
                return False
            self._failed(conn, tried, status, error, now, disable_after)
            self._log(conn, tried, event_id, message_id, status, error, now, next_try_at)
            return True

    def give_up(self, tried: Try, owner: str, event_id: str, message_id: str,
                status: int | None, error: str | None, now: float, disable_after: float) -> bool:
        """The last try failed: list the event as a failure."""
        with self._transaction() as conn:
            if self._run(conn, "DELETE FROM timeline_webhook_tries WHERE webhook_id = ?"
                               " AND position = ? AND lease_owner = ?",
                         (tried.webhook_id, tried.position, owner)).rowcount != 1:
                return False
            self._failed(conn, tried, status, error, now, disable_after,
                         ", failed_count = failed_count + 1")
            self._run(conn,
                      "INSERT INTO timeline_webhook_failures (webhook_id, position, message_id,"
                      " attempts, last_status, last_error, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT (webhook_id, position) DO UPDATE SET attempts = excluded.attempts,"
                      " last_status = excluded.last_status, last_error = excluded.last_error,"
                      " failed_at = excluded.failed_at",
                      (tried.webhook_id, tried.position, message_id, tried.attempts + 1, status,
                       error, _instant(now)))
            self._log(conn, tried, event_id, message_id, status, error, now, None)
            return True

    def disable(self, tried: Try, owner: str, event_id: str, message_id: str, reason: str,
                status: int | None, now: float) -> bool:
        """The endpoint asked to be left alone (410 Gone): no more tries go to it."""
        with self._transaction() as conn:
            if self._run(conn, "UPDATE timeline_webhook_tries SET lease_owner = NULL,"
                               " lease_until = NULL, attempts = ?"
                               " WHERE webhook_id = ? AND position = ? AND lease_owner = ?",
                         (tried.attempts + 1, tried.webhook_id, tried.position, owner)).rowcount != 1:
                return False
            self._run(conn, f"UPDATE {_ENDPOINTS} SET disabled_at = COALESCE(disabled_at, ?),"
                            " disabled_reason = COALESCE(disabled_reason, ?), last_attempt_at = ?,"
                            " last_status = ?, last_error = ? WHERE id = ?",
                      (_instant(now), reason, _instant(now), status, reason, tried.webhook_id))
            self._log(conn, tried, event_id, message_id, status, reason, now, None)
            return True
