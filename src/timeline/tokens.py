"""Write tokens: random, shown once, stored only as a hash beside the event store."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from typing import Any

from timeline.config import Settings
from timeline.store import connect_store_database, create_tables

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
        """The token's owner, comparing digests in constant time."""
        wanted = _digest(token)
        conn = self._connect()
        try:
            rows = conn.execute("SELECT digest, name, can_write FROM timeline_tokens").fetchall()
        finally:
            conn.close()
        found = None
        for digest, name, can_write in rows:
            if hmac.compare_digest(digest, wanted):
                found = Token(name, bool(can_write))
        return found
