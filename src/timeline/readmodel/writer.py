"""Writing the projector's rows: one statement per table for a page of rows, named by column."""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from timeline.readmodel.store import (
    END_OF_RECORD, ActionRow, ActionStartRow, RequestRow, RuleEventRow, RuleRow, StateRow,
)


class ClosedState(NamedTuple):
    """A state row of an earlier page that stops holding at ``known_to``."""

    known_to: str
    rule_id: str
    valid_from: str


class ClosedStart(NamedTuple):
    """An action_starts row of an earlier page that stops holding at ``known_to``."""

    known_to: str
    rule_id: str
    effective_start: str
    ord: int


class RuleVersion(NamedTuple):
    """The newest version of a rule registered on an earlier page."""

    last_version: int
    last_recorded_at: str
    id: str


class PageRows(NamedTuple):
    """The rows one page of events adds to each table, and the rows it closes."""

    rules: list[RuleRow]
    events: list[RuleEventRow]
    closed_states: list[ClosedState]
    states: list[StateRow]
    closed_starts: list[ClosedStart]
    starts: list[ActionStartRow]
    actions: list[ActionRow]
    requests: list[RequestRow]
    versions: list[RuleVersion]


def _insert(table: str, row: type, tail: str = "") -> str:
    columns = row._fields  # type: ignore[attr-defined]
    return (f"INSERT {tail}INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


def _update(table: str, row: type, open_only: bool = False) -> str:
    """Set the row type's first field where the others match (an open row only, if asked)."""
    first, *key = row._fields  # type: ignore[attr-defined]
    where = " AND ".join(f"{name} = ?" for name in key)
    return (f"UPDATE {table} SET {first} = ? WHERE {where}"
            + (f" AND known_to = '{END_OF_RECORD}'" if open_only else ""))


_INSERT_RULES = _insert("rules", RuleRow)
_INSERT_EVENTS = _insert("rule_events", RuleEventRow)
_INSERT_STATES = _insert("states", StateRow)
_INSERT_STARTS = _insert("action_starts", ActionStartRow)
_INSERT_REQUESTS = _insert("requests", RequestRow, tail="OR IGNORE ")
_CLOSE_STATES = _update("states", ClosedState, open_only=True)
_CLOSE_STARTS = _update("action_starts", ClosedStart, open_only=True)
_SET_VERSIONS = (f"UPDATE rules SET {', '.join(f'{name} = ?' for name in RuleVersion._fields[:-1])}"
                 " WHERE id = ?")
# An upsert, not INSERT OR REPLACE: a replace deletes the old row without its delete trigger,
# which would leave the old summary in the full-text index. A correction changes what the
# action says, never where it belongs.
_UPSERT_ACTIONS = (_insert("actions", ActionRow) + " ON CONFLICT (rule_id, id) DO UPDATE SET "
                   + ", ".join(f"{name} = excluded.{name}" for name in ActionRow._fields
                               if name not in ("rule_id", "id", "jurisdiction", "instrument",
                                               "recorded_at", "position")))


def write_rows(conn: sqlite3.Connection, page: PageRows) -> None:
    """Write one page of rows, inside the caller's transaction."""
    conn.executemany(_INSERT_RULES, page.rules)
    conn.executemany(_SET_VERSIONS, page.versions)
    conn.executemany(_INSERT_EVENTS, page.events)
    # Rows opened before this page close first, so that their key finds only them.
    conn.executemany(_CLOSE_STATES, page.closed_states)
    conn.executemany(_INSERT_STATES, page.states)
    conn.executemany(_CLOSE_STARTS, page.closed_starts)
    conn.executemany(_INSERT_STARTS, page.starts)
    conn.executemany(_UPSERT_ACTIONS, page.actions)
    conn.executemany(_INSERT_REQUESTS, page.requests)
