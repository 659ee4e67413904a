"""The event store's database: a connection to it, and the tables kept beside the events
(tokens, webhooks), created one process at a time."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from timeline.config import Settings

_DDL_KEY = 0x74696D6564  # "timed": creating schemas and tables

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


def create_tables(settings: Settings, statements: Iterable[str],
                  migrate: Callable[[Any], None] | None = None) -> None:
    """Run ``CREATE ... IF NOT EXISTS`` statements for tables kept beside the events, one
    process at a time on PostgreSQL (concurrent DDL on one catalogue can fail there).

    ``migrate(conn)``, when given, runs first in the same transaction: it brings tables of an
    older shape to the new one."""
    conn = connect_store_database(settings)
    try:
        if settings.on_postgres:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_KEY,))
                if migrate is not None:
                    migrate(conn)
                for statement in statements:
                    conn.execute(statement)
        else:
            conn.execute("BEGIN IMMEDIATE")  # one process at a time here too
            if migrate is not None:
                migrate(conn)
            for statement in statements:
                conn.execute(statement)
            conn.commit()
    finally:
        conn.close()


def table_exists(settings: Settings, conn: Any, name: str) -> bool:
    """Whether the store's database (its schema, on PostgreSQL) has this table."""
    if settings.on_postgres:
        found = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema ="
                             " current_schema() AND table_name = %s", (name,)).fetchone()
    else:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (name,)).fetchone()
    return found is not None


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


def connect_store_database(settings: Settings, autocommit: bool = False,
                           any_thread: bool = False) -> Any:
    """A DB-API connection to the event store's own database, for the tables kept beside it
    (tokens, webhooks): sqlite3 on the SQLite file, psycopg in the URL's schema. ``any_thread``:
    a SQLite connection that threads other than its own may use (one at a time) or close."""
    if settings.on_postgres:
        import psycopg

        ensure_postgres_schema(settings)
        return psycopg.connect(autocommit=autocommit, **settings.postgres_conninfo())
    import sqlite3

    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(settings.sqlite_path, timeout=30,
                           isolation_level=None if autocommit else "DEFERRED",
                           check_same_thread=not any_thread)
