"""The event store's surroundings: one writer at a time, and a record clock that only moves forward.

Record time must grow strictly with position, across threads and processes, so that an answer
"as known at T" never changes once given. Every write therefore happens under a store-wide lock
(a file lock beside the SQLite file, or a PostgreSQL advisory lock), and takes its instants from
a :class:`RecordClock` started from the newest stored instant.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from timeline.config import Settings

ONE_MICROSECOND = timedelta(microseconds=1)
_ADVISORY_KEY = 0x74696D656C  # "timel"
_DDL_KEY = 0x74696D6564  # "timed": creating schemas and tables


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RecordClock:
    """Instants strictly after the last stored one, and not before the wall clock."""

    def __init__(self, last: datetime | None, now: Callable[[], datetime] = utcnow):
        self._last = last
        self._now = now

    def next(self) -> datetime:
        instant = self._now()
        if self._last is not None and instant <= self._last:
            instant = self._last + ONE_MICROSECOND
        self._last = instant
        return instant


class _ReentrantLock:
    """A thread lock that a holder may take again; the outer hold takes the store-wide lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
            try:
                if self._depth == 1:
                    with self._acquire():
                        yield
                else:
                    yield
            finally:
                self._depth -= 1

    def _acquire(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileWriteLock(_ReentrantLock):
    """An exclusive ``flock`` on a file beside the SQLite store: one writer per store."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        # Kept open between holds: readers pass through the lock on every answer, and opening
        # the file each time cost more than the lock itself. The thread lock above makes one
        # thread at a time use it; a forked child opens its own (see _forget_after_fork).
        self._fd: int | None = None
        _FILE_LOCKS.add(self)

    @contextmanager
    def _acquire(self) -> Iterator[None]:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _forget_after_fork(self) -> None:
        # A flock belongs to the open file, which a forked child shares with its parent:
        # holding it there would not keep the parent out. The child opens the file again.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_FILE_LOCKS: weakref.WeakSet[FileWriteLock] = weakref.WeakSet()


def _forget_file_locks_after_fork() -> None:
    for lock in list(_FILE_LOCKS):
        lock._forget_after_fork()


os.register_at_fork(after_in_child=_forget_file_locks_after_fork)


class PostgresWriteLock(_ReentrantLock):
    """A session advisory lock on the shared PostgreSQL: one writer across every process."""

    def __init__(self, conninfo: dict[str, str], name: str = "public"):
        super().__init__()
        self.conninfo = conninfo
        # One lock per schema: stores in different schemas do not wait for each other.
        self.key = _ADVISORY_KEY ^ (zlib.crc32(name.encode()) << 8)
        self._conn = None

    def _connection(self):
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(autocommit=True, **self.conninfo)
        return self._conn

    @contextmanager
    def _acquire(self) -> Iterator[None]:
        conn = self._connection()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        except Exception:
            # A dropped connection: try once more on a fresh one.
            self._conn = None
            conn = self._connection()
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:
                # The session is gone, and PostgreSQL released its locks with it.
                self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_schemas_ready: set[tuple[str, str]] = set()
_schemas_lock = threading.Lock()


def ensure_postgres_schema(settings: Settings) -> None:
    """Create the URL's schema on first use, so one URL is all an operator sets."""
    import psycopg
    from psycopg import sql

    key = (str(settings.database_url), settings.postgres_schema)
    with _schemas_lock:
        if key in _schemas_ready:
            return
        try:
            with psycopg.connect(**settings.postgres_conninfo()) as conn, conn.transaction():
                # Processes starting together would race on the catalogue: one at a time.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_KEY,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.postgres_schema)))
        except psycopg.OperationalError as exc:
            from timeline.domain.errors import StoreUnavailable

            raise StoreUnavailable(f"Cannot reach PostgreSQL: {exc}".strip()) from None
        _schemas_ready.add(key)


def create_tables(settings: Settings, statements: Iterable[str]) -> None:
    """Run ``CREATE ... IF NOT EXISTS`` statements for tables kept beside the events, one
    process at a time on PostgreSQL (concurrent DDL on one catalogue can fail there)."""
    conn = connect_store_database(settings)
    try:
        if settings.on_postgres:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_KEY,))
                for statement in statements:
                    conn.execute(statement)
        else:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
    finally:
        conn.close()


@contextmanager
def schema_changes(settings: Settings) -> Iterator[None]:
    """Hold the DDL lock while a library creates its tables (eventsourcing on PostgreSQL)."""
    if not settings.on_postgres:
        yield
        return
    import psycopg

    ensure_postgres_schema(settings)
    with psycopg.connect(**settings.postgres_conninfo()) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_KEY,))
        yield


def connect_store_database(settings: Settings, autocommit: bool = False) -> Any:
    """A DB-API connection to the event store's own database, for the tables kept beside it
    (tokens, webhooks): sqlite3 on the SQLite file, psycopg in the URL's schema."""
    if settings.on_postgres:
        import psycopg

        ensure_postgres_schema(settings)
        return psycopg.connect(autocommit=autocommit, **settings.postgres_conninfo())
    import sqlite3

    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(settings.sqlite_path, timeout=30,
                           isolation_level=None if autocommit else "DEFERRED")
