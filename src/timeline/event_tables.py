"""Where timeline reads or writes eventsourcing's tables itself, below the library's public API.

Three things the library does not offer, each needed by something a user waits for:

- inserting an import's events inside one transaction of our own
  (:func:`insert_in_transaction`): ``Application.save`` commits each call, and an import must
  commit all of its events or none, and make the read model before committing them;
- reading the events rule by rule, along the table's own key (:func:`statement`): what builds
  a read model in one pass;
- the store's head in one indexed lookup on a plain read-only connection (SQLite): asked on
  every read.

They rely on the recorders' private ``_insert_events`` (SQLite) and ``_insert_stored_events``
(PostgreSQL) and on the names of the tables' columns, none of which the library promises to keep
between minor versions: that is why eventsourcing is pinned below 9.6 in pyproject.toml. Raise
the pin only once the tests pass against the new version.
"""

from __future__ import annotations

from typing import Any, Sequence

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder


def statement(recorder: ApplicationRecorder, template: str) -> Any:
    """A statement on the store's events table: ``template`` names the table ``{table}`` and
    the position column ``{position}``, and takes parameters as ``?``."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return template.format(table=recorder.events_table_name, position="rowid")
    from psycopg import sql

    return sql.SQL(
        template.replace("?", "%s").format(table="{}.{}", position="notification_id")
    ).format(sql.Identifier(recorder.datastore.schema),  # type: ignore[attr-defined]
             sql.Identifier(recorder.events_table_name))  # type: ignore[attr-defined]


def insert_in_transaction(recorder: ApplicationRecorder, cursor: Any,
                          events: Sequence[StoredEvent]) -> None:
    """Insert stored events on ``cursor``, inside the caller's open transaction, as a save
    would (on PostgreSQL, the table is locked first, as a save does)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        recorder._insert_events(cursor, events)
    else:
        recorder._insert_stored_events(cursor, events)  # type: ignore[attr-defined]


def fetch(cursor: Any, statement: Any, params: tuple) -> list[tuple]:
    """Rows as tuples from either store's cursor (PostgreSQL's give dictionaries)."""
    cursor.execute(statement, params)
    return [tuple(row.values()) if isinstance(row, dict) else tuple(row)
            for row in cursor.fetchall()]
