"""Webhook endpoints and their delivery state, stored in the event store's own database.

Every process that serves or delivers sees the same endpoints, and a restarted worker resumes
where the last one stopped. Each endpoint keeps a cursor (every event up to it is settled:
delivered, or given up and listed as a failure) and the state of the event being tried next
(its attempts and when to try again). A worker claims an endpoint with a single conditional
UPDATE that takes a lease with an expiry, so several workers, in one process or many, never
deliver one endpoint's events concurrently, and a crashed worker's lease simply runs out.
Deliveries for one endpoint therefore go out one at a time, in position order.
"""

from __future__ import annotations

import base64
import json
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from timeline.config import Settings
from timeline.domain.dates import format_instant
from timeline.events import EVENT_TYPES
from timeline.feed.urlsafety import Resolver, check_url, system_resolver
from timeline.store import connect_store_database, create_tables, utcnow

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the Standard Webhooks spec asks for 24 to 64

_COLUMNS = (
    "id", "url", "types", "created_at", "start_after", "delivered_through", "pending_position",
    "attempts", "next_try_at", "lease_owner", "lease_until", "disabled_at", "disabled_reason",
    "last_attempt_at", "last_status", "last_error", "delivered_count", "failed_count",
)

_CREATE = (
    "CREATE TABLE IF NOT EXISTS timeline_webhooks ("
    " id TEXT PRIMARY KEY,"
    " url TEXT NOT NULL,"
    " types TEXT NOT NULL,"  # JSON list of event types; empty means every type
    " secret TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " start_after BIGINT NOT NULL,"  # the head when registered: later events are delivered
    " delivered_through BIGINT NOT NULL,"  # every event up to here is settled
    " pending_position BIGINT,"  # the event being retried, if any
    " attempts INTEGER NOT NULL DEFAULT 0,"  # failed tries of the pending event
    " next_try_at DOUBLE PRECISION NOT NULL DEFAULT 0,"  # epoch seconds
    " lease_owner TEXT,"
    " lease_until DOUBLE PRECISION,"
    " disabled_at TEXT,"
    " disabled_reason TEXT,"
    " last_attempt_at TEXT,"
    " last_status INTEGER,"
    " last_error TEXT,"
    " delivered_count BIGINT NOT NULL DEFAULT 0,"
    " failed_count BIGINT NOT NULL DEFAULT 0)",
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


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    types: tuple[str, ...]
    created_at: str
    start_after: int
    delivered_through: int
    pending_position: int | None
    attempts: int
    next_try_at: float
    lease_owner: str | None
    lease_until: float | None
    disabled_at: str | None
    disabled_reason: str | None
    last_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    delivered_count: int
    failed_count: int
    secret: str = field(default="", repr=False)

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def wants(self, event_type: str) -> bool:
        return not self.types or event_type in self.types

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        pending = None
        if self.pending_position is not None:
            pending = {
                "position": self.pending_position,
                "attempts": self.attempts,
                "next_try_at": format_instant(datetime.fromtimestamp(self.next_try_at, timezone.utc)),
            }
        last = None
        if self.last_attempt_at is not None:
            last = {"at": self.last_attempt_at, "status": self.last_status, "error": self.last_error}
        return {
            "id": self.id,
            "url": self.url,
            "types": list(self.types),
            "created_at": self.created_at,
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "after": self.start_after,
            "delivered_through": self.delivered_through,
            "delivered": self.delivered_count,
            "failed": self.failed_count,
            "pending": pending,
            "last_attempt": last,
        }


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _now_text() -> str:
    return format_instant(utcnow())


class WebhookStore:
    """Endpoints and delivery state; plain SQL that runs on SQLite and on PostgreSQL alike."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._create()

    # Connections ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        return connect_store_database(self.settings)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def _sql(self, statement: str) -> str:
        """Statements are written with ``?``; PostgreSQL's driver wants ``%s``."""
        return statement.replace("?", "%s") if self.settings.on_postgres else statement

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        with self._transaction() as conn:
            return conn.execute(self._sql(statement), tuple(params)).rowcount

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._transaction() as conn:
            return list(conn.execute(self._sql(statement), tuple(params)).fetchall())

    def _create(self) -> None:
        create_tables(self.settings, _CREATE)

    # Managing endpoints ------------------------------------------------------------------------

    def register(
        self,
        url: str,
        types: Sequence[str] | None,
        start_after: int,
        resolver: Resolver = system_resolver,
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret (shown once); :class:`RefusedURL` for a refused URL."""
        check_url(url, self.settings.webhook_allow_private, resolver)
        wanted = tuple(dict.fromkeys(types or ()))  # keep order, drop repeats
        unknown = [t for t in wanted if t not in EVENT_TYPES]
        if unknown:  # the schema checks this too; the store never holds a type it cannot match
            raise ValueError(f"unknown event types: {unknown}")
        ident = "wh_" + secrets.token_hex(8)
        secret = new_secret()
        self._execute(
            "INSERT INTO timeline_webhooks (id, url, types, secret, created_at, start_after,"
            " delivered_through, attempts, next_try_at, delivered_count, failed_count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0)",
            (ident, url, json.dumps(list(wanted)), secret, _now_text(), start_after, start_after),
        )
        endpoint = self.get(ident)
        assert endpoint is not None
        return endpoint, secret

    def _endpoint(self, row: tuple) -> Endpoint:
        values = dict(zip(_COLUMNS + ("secret",), row))
        values["types"] = tuple(json.loads(values["types"]))
        return Endpoint(**values)

    def _select(self, where: str = "", params: Sequence[Any] = ()) -> list[Endpoint]:
        rows = self._query(
            f"SELECT {', '.join(_COLUMNS)}, secret FROM timeline_webhooks {where}", params
        )
        return [self._endpoint(row) for row in rows]

    def get(self, webhook_id: str) -> Endpoint | None:
        found = self._select("WHERE id = ?", (webhook_id,))
        return found[0] if found else None

    def list(self) -> list[Endpoint]:
        return self._select("ORDER BY created_at, id")

    def delete(self, webhook_id: str) -> bool:
        with self._transaction() as conn:
            conn.execute(self._sql("DELETE FROM timeline_webhook_failures WHERE webhook_id = ?"),
                         (webhook_id,))
            return conn.execute(self._sql("DELETE FROM timeline_webhooks WHERE id = ?"),
                                (webhook_id,)).rowcount == 1

    def failures(self, webhook_id: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT position, message_id, attempts, last_status, last_error, failed_at"
            " FROM timeline_webhook_failures WHERE webhook_id = ? ORDER BY position",
            (webhook_id,),
        )
        keys = ("position", "message_id", "attempts", "last_status", "last_error", "failed_at")
        return [dict(zip(keys, row)) for row in rows]

    def backlog(self, head: int) -> dict[str, int]:
        """Events each active endpoint has still to settle: those after ``delivered_through``
        up to ``head`` (counted in positions, which on SQLite have no gaps)."""
        rows = self._query(
            "SELECT id, delivered_through FROM timeline_webhooks WHERE disabled_at IS NULL"
        )
        return {webhook_id: max(0, head - through) for webhook_id, through in rows}

    # Delivery state ----------------------------------------------------------------------------

    def due(self, now: float, head: int, limit: int = 100) -> list[str]:
        """Active endpoints with undelivered events whose next try is due and that no one holds."""
        rows = self._query(
            "SELECT id FROM timeline_webhooks WHERE disabled_at IS NULL AND delivered_through < ?"
            " AND next_try_at <= ? AND (lease_owner IS NULL OR lease_until < ?)"
            " ORDER BY next_try_at, id LIMIT ?",
            (head, now, now, limit),
        )
        return [row[0] for row in rows]

    def claim(self, webhook_id: str, owner: str, now: float, lease_until: float) -> bool:
        """Take the endpoint for one delivery; False if another worker holds it or it is not due.

        One UPDATE decides: on PostgreSQL a concurrent claimer waits for the row and then finds
        the lease taken; on SQLite writers take turns.
        """
        return self._execute(
            "UPDATE timeline_webhooks SET lease_owner = ?, lease_until = ?"
            " WHERE id = ? AND disabled_at IS NULL AND next_try_at <= ?"
            " AND (lease_owner IS NULL OR lease_until < ?)",
            (owner, lease_until, webhook_id, now, now),
        ) == 1

    def release(self, webhook_id: str, owner: str, through: int | None = None,
                next_try_at: float | None = None) -> bool:
        """Give the lease back, optionally moving the cursor past events the endpoint skips."""
        return self._execute(
            "UPDATE timeline_webhooks SET lease_owner = NULL, lease_until = NULL,"
            " delivered_through = CASE WHEN ? > delivered_through THEN ? ELSE delivered_through END,"
            " next_try_at = COALESCE(?, next_try_at)"
            " WHERE id = ? AND lease_owner = ?",
            (through or 0, through or 0, next_try_at, webhook_id, owner),
        ) == 1

    def delivered(self, webhook_id: str, owner: str, position: int, status: int) -> bool:
        return self._execute(
            "UPDATE timeline_webhooks SET delivered_through = ?, pending_position = NULL,"
            " attempts = 0, next_try_at = 0, lease_owner = NULL, lease_until = NULL,"
            " last_attempt_at = ?, last_status = ?, last_error = NULL,"
            " delivered_count = delivered_count + 1"
            " WHERE id = ? AND lease_owner = ?",
            (position, _now_text(), status, webhook_id, owner),
        ) == 1

    def retry_later(
        self, webhook_id: str, owner: str, through: int, position: int, attempts: int,
        next_try_at: float, status: int | None, error: str | None,
    ) -> bool:
        return self._execute(
            "UPDATE timeline_webhooks SET delivered_through = ?, pending_position = ?,"
            " attempts = ?, next_try_at = ?, lease_owner = NULL, lease_until = NULL,"
            " last_attempt_at = ?, last_status = ?, last_error = ?"
            " WHERE id = ? AND lease_owner = ?",
            (through, position, attempts, next_try_at, _now_text(), status, error, webhook_id, owner),
        ) == 1

    def give_up(
        self, webhook_id: str, owner: str, position: int, message_id: str, attempts: int,
        status: int | None, error: str | None,
    ) -> bool:
        """Every try failed: list the event as a failure and go on with the next one."""
        now = _now_text()
        with self._transaction() as conn:
            moved = conn.execute(self._sql(
                "UPDATE timeline_webhooks SET delivered_through = ?, pending_position = NULL,"
                " attempts = 0, next_try_at = 0, lease_owner = NULL, lease_until = NULL,"
                " last_attempt_at = ?, last_status = ?, last_error = ?,"
                " failed_count = failed_count + 1"
                " WHERE id = ? AND lease_owner = ?"),
                (position, now, status, error, webhook_id, owner),
            ).rowcount == 1
            if moved:
                conn.execute(self._sql(
                    "INSERT INTO timeline_webhook_failures (webhook_id, position, message_id,"
                    " attempts, last_status, last_error, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (webhook_id, position) DO NOTHING"),
                    (webhook_id, position, message_id, attempts, status, error, now),
                )
            return moved

    def disable(self, webhook_id: str, owner: str, reason: str, status: int | None) -> bool:
        now = _now_text()
        return self._execute(
            "UPDATE timeline_webhooks SET disabled_at = ?, disabled_reason = ?,"
            " lease_owner = NULL, lease_until = NULL, last_attempt_at = ?, last_status = ?,"
            " last_error = ? WHERE id = ? AND lease_owner = ?",
            (now, reason, now, status, reason, webhook_id, owner),
        ) == 1
