"""The first projector, kept as the reference the fast one is checked against.

It folds the whole rule from scratch after every event and rewrites what changed: slow, and
obviously right. tests/test_projection.py compares every table it writes with the fast one's.
"""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any, Callable, Sequence

from timeline.domain.dates import PolicyDate
from timeline.domain.fold import Action, Segment, State, segments
from timeline.domain.model import Rule
from timeline.events import RULE_REGISTERED, to_record
from timeline.fastjson import dumps as _dumps  # the read model's encoding
from timeline.readmodel.actions import KnownAction, known_actions
from timeline.readmodel.store import END_OF_RECORD, END_OF_TIME, START_OF_TIME, ReadModel


def live_fold_actions(actions: dict[str, KnownAction]) -> list[Action]:
    """The actions a fold sees: every one not retracted, with its corrections applied."""
    return [known.to_fold() for known in actions.values() if known.retraction is None]


def _day(value: date) -> str:
    if value == date.min:
        return START_OF_TIME
    if value == date.max:
        return END_OF_TIME
    return value.isoformat()


def _state_row(seg: Segment) -> tuple:
    state = seg.state
    return (
        _day(seg.valid_from),
        state.status,
        state.rate_percent,
        _dumps(list(state.conditions)),
        state.since,
        state.until,
        int(state.certain),
        _dumps(list(state.uncertain_because)),
    )


_STATE_COLUMNS = (
    "valid_from, status, rate_percent, conditions, since, until, certain, uncertain_because"
)


class ReferenceProjector:
    """Keeps every read model in step with the event store."""

    def __init__(self, readmodel: ReadModel):
        self.readmodel = readmodel
        self._events: dict[str, list[dict[str, Any]]] = {}  # each rule's events, in order

    def catch_up(
        self,
        fetch: Callable[[int, int], Sequence[tuple[int, Rule.Event]]],
        batch: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Project every event after the stored position; returns the position reached."""
        while True:
            with self.readmodel.write() as conn:
                position = self.readmodel.position(conn)
                page = fetch(position, batch)
                if not page:
                    return position
                for pos, event in page:
                    self.apply(conn, pos, event)
                self.readmodel.set_position(conn, page[-1][0])
            if progress is not None:
                progress(page[-1][0], len(page))

    def apply(self, conn: sqlite3.Connection, position: int, event: Rule.Event) -> None:
        record = to_record(event)
        rule_id = record["rule_id"]
        data = record["data"]
        recorded_at = record["recorded_at"]
        kind = record["type"]
        action_id = data.get("action_id", data.get("id")) if kind != RULE_REGISTERED else None
        conn.execute(
            "INSERT INTO rule_events (position, rule_id, version, type, action_id, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (position, rule_id, record["version"], kind, action_id, recorded_at),
        )
        if kind != RULE_REGISTERED:
            conn.execute("UPDATE rules SET last_version = ?, last_recorded_at = ? WHERE id = ?",
                         (record["version"], recorded_at, rule_id))
            self._events.setdefault(rule_id, []).append(
                {"position": position, "type": kind, "recorded_at": recorded_at, "data": data})
        if kind == RULE_REGISTERED:
            self._register(conn, position, recorded_at, data)
        else:
            self._refold(conn, rule_id, recorded_at, action_id)
        request = record.get("request")
        if request and request.get("key"):
            conn.execute(
                "INSERT OR IGNORE INTO requests (key, fingerprint, rule_id, position, type, "
                "object_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request["key"], request.get("fingerprint", ""), rule_id, position, kind,
                 data["id"], recorded_at),
            )

    def _register(self, conn: sqlite3.Connection, position: int, recorded_at: str, data: dict) -> None:
        conn.execute(
            "INSERT INTO rules (id, title, jurisdiction, instrument, targets, subjects, tags, links, "
            "subjects_text, registered_at, position, last_version, last_recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (data["id"], data["title"], data["jurisdiction"], data["instrument"],
             _dumps(data["targets"]), _dumps(data["subjects"]), _dumps(data["tags"]),
             _dumps(data["links"]), " ".join(data["subjects"]), recorded_at, position,
             recorded_at),
        )
        self._replace_states(conn, data["id"], recorded_at, [Segment(date.min, date.max, State())])

    def _refold(self, conn: sqlite3.Connection, rule_id: str, recorded_at: str, action_id: str) -> None:
        actions = known_actions(self._events[rule_id])
        live = live_fold_actions(actions)
        self._replace_states(conn, rule_id, recorded_at, segments(live))
        self._replace_starts(conn, rule_id, recorded_at, live)
        known = actions[action_id]
        rule = conn.execute(
            "SELECT jurisdiction, instrument FROM rules WHERE id = ?", (rule_id,)
        ).fetchone()
        effective = PolicyDate.parse(known.fields["effective"])
        conn.execute(
            "INSERT OR REPLACE INTO actions (rule_id, id, kind, effective, effective_start, "
            "effective_end, summary, data, jurisdiction, instrument, recorded_at, position, "
            "corrected, retracted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rule_id, known.id, known.fields["kind"], known.fields["effective"],
             effective.start.isoformat(), effective.end.isoformat(),
             known.fields.get("summary", ""), _dumps(known.fields), rule["jurisdiction"],
             rule["instrument"], known.recorded_at, known.position, int(bool(known.corrections)),
             int(known.retraction is not None)),
        )

    def _replace_states(
        self, conn: sqlite3.Connection, rule_id: str, recorded_at: str, new: list[Segment]
    ) -> None:
        """Close the rows that no longer hold and open the new ones, from ``recorded_at`` on."""
        current = {
            tuple(row[1:]): row[0]
            for row in conn.execute(
                f"SELECT known_from, {_STATE_COLUMNS} FROM states WHERE rule_id = ? AND known_to = ?",
                (rule_id, END_OF_RECORD),
            )
        }
        wanted = [_state_row(seg) for seg in new]
        keep = set(wanted) & set(current)
        for row, known_from in current.items():
            if row not in keep:
                conn.execute(
                    "UPDATE states SET known_to = ? WHERE rule_id = ? AND valid_from = ? "
                    "AND known_from = ?", (recorded_at, rule_id, row[0], known_from))
        for row in wanted:
            if row not in keep:
                conn.execute(
                    f"INSERT INTO states (rule_id, known_from, known_to, {_STATE_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rule_id, recorded_at, END_OF_RECORD, *row),
                )

    def _replace_starts(
        self, conn: sqlite3.Connection, rule_id: str, recorded_at: str, live: list[Action]
    ) -> None:
        """Each live action's start day and record order, as known from ``recorded_at`` on."""
        current = {tuple(row) for row in conn.execute(
            "SELECT action_id, effective_start, ord FROM action_starts WHERE rule_id = ? "
            "AND known_to = ?", (rule_id, END_OF_RECORD))}
        wanted = {(a.id, _day(a.effective.start), a.order) for a in live}
        for action_id, start, order in current - wanted:
            conn.execute(
                "UPDATE action_starts SET known_to = ? WHERE rule_id = ? AND effective_start = ? "
                "AND ord = ? AND known_to = ?", (recorded_at, rule_id, start, order, END_OF_RECORD))
        for action_id, start, order in wanted - current:
            conn.execute(
                "INSERT INTO action_starts (rule_id, effective_start, ord, known_from, known_to, "
                "action_id) VALUES (?, ?, ?, ?, ?, ?)",
                (rule_id, start, order, recorded_at, END_OF_RECORD, action_id))
