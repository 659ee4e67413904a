"""Write tokens: random, shown once, stored only as a hash beside the event store."""

from __future__ import annotations

import hashlib
import secrets
import threading
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from timeline.config import Settings
from timeline.database import connect_store_database, create_tables

TOKEN_PREFIX = "tl_"


@dataclass(frozen=True)
class Token:
    name: str
    can_write: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens live in the event store's own database, so every server process sees them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._create()
        # Every write checks its token: each thread keeps a connection for that, and the
        # store closes them all (see close).
        self._local = threading.local()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()

    def _connect(self) -> Any:
        return connect_store_database(self.settings, autocommit=True)

    @property
    def _param(self) -> str:
        return "%s" if self.settings.on_postgres else "?"

    def _create(self) -> None:
        create_tables(self.settings, [
            "CREATE TABLE IF NOT EXISTS timeline_tokens (digest TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "can_write INTEGER NOT NULL, created_at TEXT NOT NULL)"
        ])

    def create(self, name: str, can_write: bool = True) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        p = self._param
        conn = self._connect()
        try:
            conn.execute(
                f"INSERT INTO timeline_tokens (digest, name, can_write, created_at) VALUES ({p}, {p}, {p}, {p})",
                (_digest(token), name, int(can_write), datetime.now(timezone.utc).isoformat()),
            )
        finally:
            conn.close()
        return token

    def check(self, token: str) -> Token | None:
        """The token's owner, found by the token's digest.

        Looking the digest up by its key may take longer for some digests than for others,
        which tells a caller nothing about any token: finding a token from its digest is as
        hard as guessing it.
        """
        query = f"SELECT name, can_write FROM timeline_tokens WHERE digest = {self._param}"
        try:
            row = self._checking().execute(query, (_digest(token),)).fetchone()
        except Exception:
            if not self.settings.on_postgres:
                raise
            # PostgreSQL may have dropped this thread's session (a restart): once more on a
            # new one.
            self._drop_checking()
            row = self._checking().execute(query, (_digest(token),)).fetchone()
        return None if row is None else Token(row[0], bool(row[1]))

    def _checking(self) -> Any:
        """This thread's connection for checking tokens (``close`` may close it from another)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_store_database(self.settings, autocommit=True, any_thread=True)
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    def _drop_checking(self) -> None:
        """Close this thread's connection and forget it."""
        conn, self._local.conn = self._local.conn, None
        with self._opened_lock:
            if conn in self._opened:
                self._opened.remove(conn)
        with suppress(Exception):  # its session is gone already
            conn.close()

    def close(self) -> None:
        """Close the connections that checked tokens."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
