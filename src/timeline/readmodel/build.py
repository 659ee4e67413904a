"""A whole read model made in one pass over the events: what ``import`` and ``rebuild`` do."""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterable

from timeline.domain.model import Rule
from timeline.readmodel.projector import Projector, collector_paused
from timeline.readmodel.store import (
    CACHE_KIB, INDEXES_ACROSS_RULES, SEARCH_COLUMNS, TABLE_STATEMENTS, ReadModel,
)
from timeline.readmodel.writer import write_rows


# The page cache of a build, in KiB; a connection otherwise keeps CACHE_KIB.
BUILD_CACHE_KIB = 256 * 1024


def build(
    readmodel: ReadModel,
    events_by_rule: Iterable[tuple[int, Rule.Event]],
    head: int,
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the read model with one made from every event up to ``head``; returns ``head``.

    ``events_by_rule`` gives each rule's events together, in version order
    (:meth:`~timeline.application.PolicyApplication.events_by_rule`), with their positions.
    Everything happens in one transaction of the read model: until it commits, readers
    (full-text searches included) see the read model as it was, and an exception or a crash
    leaves it so. ``progress(position, count)`` follows each page of events;
    ``before_commit()`` runs last in the transaction (an exception there rolls it back).
    """
    with readmodel.write() as conn, collector_paused():
        # The rows of one rule land all over the indexes keyed otherwise (the rules by
        # jurisdiction, the requests by key, the full-text indexes): a page cache that holds
        # them keeps a large build from reading their pages over and over.
        conn.execute(f"PRAGMA cache_size=-{BUILD_CACHE_KIB}")
        ReadModel.replace_tables(conn)
        indexes = _Indexes(conn)
        for page in Projector(readmodel).pages_by_rule(events_by_rule):
            write_rows(conn, page)
            indexes.after_page()
            if progress is not None:
                progress(page.events[-1].position, len(page.events))
        ReadModel.set_position(conn, head)
        indexes.finish()
        if before_commit is not None:
            before_commit()
    # The transaction went through the write-ahead log, as large as the read model: empty it
    # now, or every reader looks pages up in its index until some later write resets it.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return head


class _Indexes:
    """The indexes of a build, made in its transaction as its rows allow: readers never see
    the new read model without them.

    The full-text indexes are filled with one statement per table per page, their insert
    triggers put aside until :meth:`finish`: FTS5 writes out the terms it holds at every
    statement, so indexing a row at a time through the triggers made a large build much slower.
    A build writes each row once (its pages end between rules), so the rows after the last
    indexed one are the page's new rows. The indexes keyed across rules (the actions by
    effective day, alone or after a filter), which rows coming rule by rule would fill in no
    order, are made once every row is written.
    """

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        ReadModel.create_search_in(conn)  # on empty tables: nothing to fill yet
        self._triggers = []
        for table in SEARCH_COLUMNS:
            name = f"{table}_ai"
            self._triggers.append(conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)
            ).fetchone()[0])
            conn.execute(f"DROP TRIGGER {name}")
        self._indexed = dict.fromkeys(SEARCH_COLUMNS, 0)  # the last rowid indexed, by table
        for name in INDEXES_ACROSS_RULES:
            conn.execute(f"DROP INDEX {name}")

    def after_page(self) -> None:
        """Index the rows written since the last call for search."""
        conn = self._conn
        for table, columns in SEARCH_COLUMNS.items():
            names = ", ".join(columns)
            conn.execute(f"INSERT INTO {table}_fts (rowid, {names}) "
                         f"SELECT rowid, {names} FROM {table} WHERE rowid > ?",
                         (self._indexed[table],))
            last = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
            self._indexed[table] = last or 0

    def finish(self) -> None:
        """Once every row is written: index the last rows for search, put the insert triggers
        back (the read model keeps its full-text indexes up to date from here on), and make the
        indexes keyed across rules."""
        self.after_page()
        for sql in self._triggers:
            self._conn.execute(sql)
        for name in INDEXES_ACROSS_RULES:
            self._conn.execute(next(statement for statement in TABLE_STATEMENTS
                                    if f" {name} " in statement))
