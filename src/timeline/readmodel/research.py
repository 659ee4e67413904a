"""Research downloads from the read model: spells and balanced panels, as known at an instant.

Both are walks over the bitemporal state rows (table ``states``) and what they rest on (table
``action_starts``), two cursors in the same order (rule id, then valid time), merged here. No
event is replayed and nothing is held in memory but the rule being walked.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Iterable, Iterator

from timeline.fastjson import loads
from timeline.readmodel.queries import rule_filter_sql

SPELL_COLUMNS = (
    "rule_id", "title", "jurisdiction", "instrument", "targets", "subjects", "status",
    "rate_percent", "conditions", "valid_from", "valid_to", "certain", "uncertain_because",
    "based_on", "known_at",
)
# The spell columns with the period's last day in place of valid_from and valid_to.
PANEL_COLUMNS = (
    "rule_id", "title", "jurisdiction", "instrument", "targets", "subjects", "status",
    "rate_percent", "conditions", "period", "certain", "uncertain_because", "based_on",
    "known_at", "changed",
)
PERIODS = ("day", "week", "month", "quarter", "year")
# The most periods a panel keeps made for all its rules (beyond, each rule makes them again).
_PERIODS_HELD = 100_000

# A state row and its rule's columns: rules registered at :known_at that match the filters,
# each with its rows known then (none yet for a rule registered but not yet projected with
# one: the LEFT JOIN keeps the rule), in (rule id, valid_from) order: the key of both tables.
_STATES_SQL = """
SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, r.subjects,
       s.valid_from, s.status, s.rate_percent, s.conditions, s.since, s.until, s.certain,
       s.uncertain_because
FROM rules r
LEFT JOIN states s ON s.rule_id = r.id AND s.known_from <= :known_at AND s.known_to > :known_at
WHERE r.registered_at <= :known_at{where}
ORDER BY r.id, s.valid_from
"""

# Each live action's start day and id as known at :known_at, in the fold's order.
_STARTS_SQL = """
SELECT a.rule_id, a.effective_start, a.action_id
FROM rules r
JOIN action_starts a ON a.rule_id = r.id AND a.known_from <= :known_at AND a.known_to > :known_at
WHERE r.registered_at <= :known_at{where}
ORDER BY a.rule_id, a.effective_start, a.ord
"""


@dataclass
class _Rule:
    """One rule's columns and its states over valid time, first to last."""

    fields: dict[str, Any]
    states: list[dict[str, Any]]  # each with valid_from, valid_to (None: open) and the state


# A state before any action (or of a rule with none): what GET /api/v1/rules/<id> answers.
_NO_STATE = {"status": "none", "rate_percent": None, "conditions": [], "since": None,
             "until": None, "certain": True, "uncertain_because": [], "based_on": []}
_COMPARED = ("status", "rate_percent", "conditions", "since", "until", "certain",
             "uncertain_because", "based_on")
_CHANGES = ("status", "rate_percent", "conditions")


def _rules(conn: sqlite3.Connection, known_at: str, jurisdiction: str | None,
           instrument: str | None, rule: str | None, q: str | None) -> Iterator[_Rule]:
    """Every matching rule with its states as known at ``known_at``, ordered by rule id.

    Consecutive rows that answer the same (all state fields equal) are one stretch.
    """
    where, params = rule_filter_sql(jurisdiction, instrument, q)
    if rule:
        where += " AND r.id = :rule"
        params["rule"] = rule
    params["known_at"] = known_at
    starts = conn.cursor().execute(_STARTS_SQL.format(where=where), params)
    pending_start = next(starts, None)
    current: _Rule | None = None
    based_on: list[str] = []
    for row in conn.cursor().execute(_STATES_SQL.format(where=where), params):
        rule_id = row[0]
        if current is None or current.fields["rule_id"] != rule_id:
            if current is not None:
                yield current
            current = _Rule({"rule_id": rule_id, "title": row[1], "jurisdiction": row[2],
                             "instrument": row[3], "targets": loads(row[4]),
                             "subjects": loads(row[5])}, [])
            based_on = []
            # Both cursors walk the same rules in the same order: skip no rule's starts.
            while pending_start is not None and pending_start[0] < rule_id:
                pending_start = next(starts, None)
        valid_from = row[6]
        if valid_from is None:
            continue  # a rule with no state row known then
        # What a state starting on valid_from rests on: the rule's actions starting by then.
        grew = False
        while (pending_start is not None and pending_start[0] == rule_id
               and pending_start[1] <= valid_from):
            based_on.append(pending_start[2])
            pending_start = next(starts, None)
            grew = True
        state = {
            "status": row[7],
            "rate_percent": row[8],
            "conditions": loads(row[9]),
            "since": row[10],
            "until": row[11],
            "certain": bool(row[12]),
            "uncertain_because": loads(row[13]),
            "based_on": list(based_on) if grew or not current.states
            else current.states[-1]["based_on"],
        }
        if current.states and all(current.states[-1][k] == state[k] for k in _COMPARED):
            continue
        if current.states:
            current.states[-1]["valid_to"] = valid_from
        current.states.append({"valid_from": valid_from, "valid_to": None, **state})
    if current is not None:
        yield current


def iter_spells(conn: sqlite3.Connection, known_at: str, *, jurisdiction: str | None = None,
                instrument: str | None = None, rule: str | None = None,
                q: str | None = None) -> Iterator[dict[str, Any]]:
    """Every matching rule's spells as known at ``known_at``: one dict per rule per stretch of
    valid time in which its state holds, keyed by :data:`SPELL_COLUMNS`, ordered by rule id,
    then ``valid_from``. A rule's first spell starts on its first action's day (a rule with no
    action has none); ``valid_to`` is the first day after, None while open."""
    for walked in _rules(conn, known_at, jurisdiction, instrument, rule, q):
        for state in walked.states:
            if not state["based_on"]:
                continue  # before the rule's first action
            yield {
                **walked.fields,
                "status": state["status"],
                "rate_percent": state["rate_percent"],
                "conditions": state["conditions"],
                "valid_from": state["valid_from"],
                "valid_to": state["valid_to"],
                "certain": state["certain"],
                "uncertain_because": state["uncertain_because"],
                "based_on": state["based_on"],
                "known_at": known_at,
            }


def period_ends(day_from: date, day_to: date, every: str) -> Iterator[str]:
    """The last day of every calendar period (ISO weeks: Monday to Sunday) that meets
    ``[day_from, day_to]``, the last one cut to ``day_to``, as YYYY-MM-DD."""
    if every not in PERIODS:
        raise ValueError(f"unknown period {every!r}")
    day = day_from
    while day <= day_to:
        end = min(_period_end(day, every), day_to)
        yield end.isoformat()
        if end == date.max:
            return
        day = end + timedelta(days=1)


def period_count(day_from: date, day_to: date, every: str) -> int:
    """How many periods :func:`period_ends` gives, without making them."""
    if day_from > day_to:
        return 0
    if every == "day":
        return (day_to - day_from).days + 1
    if every == "week":
        return (day_to - timedelta(days=day_to.weekday())
                - (day_from - timedelta(days=day_from.weekday()))).days // 7 + 1
    months = (day_to.year - day_from.year) * 12 + day_to.month - day_from.month
    if every == "month":
        return months + 1
    if every == "quarter":
        return ((day_to.year * 4 + (day_to.month - 1) // 3)
                - (day_from.year * 4 + (day_from.month - 1) // 3)) + 1
    return day_to.year - day_from.year + 1


def _period_end(day: date, every: str) -> date:
    if every == "day":
        return day
    if every == "week":
        return day + timedelta(days=6 - day.weekday())
    if every == "year":
        return date(day.year, 12, 31)
    last_month = day.month if every == "month" else ((day.month - 1) // 3) * 3 + 3
    if last_month == 12:
        return date(day.year, 12, 31)
    return date(day.year, last_month + 1, 1) - timedelta(days=1)


def count_rules(conn: sqlite3.Connection, known_at: str, *, jurisdiction: str | None = None,
                instrument: str | None = None, rule: str | None = None,
                q: str | None = None) -> int:
    """How many rules registered at ``known_at`` match the filters (a panel's rows per period)."""
    where, params = rule_filter_sql(jurisdiction, instrument, q)
    if rule:
        where += " AND r.id = :rule"
        params["rule"] = rule
    return conn.execute(f"SELECT count(*) FROM rules r WHERE r.registered_at <= :known_at{where}",
                        {**params, "known_at": known_at}).fetchone()[0]


def iter_panel(conn: sqlite3.Connection, known_at: str, day_from: date, day_to: date, every: str,
               *, jurisdiction: str | None = None, instrument: str | None = None,
               rule: str | None = None, q: str | None = None) -> Iterator[dict[str, Any]]:
    """A balanced panel: every matching rule registered at ``known_at``, for every period
    between ``day_from`` and ``day_to`` (see :func:`period_ends`), its state as of the period's
    last day, keyed by :data:`PANEL_COLUMNS`, ordered by rule id, then period. ``changed``
    says whether status, rate or conditions differ from the rule's previous row (False on
    the first)."""
    # The periods are made once for all rules, unless there are too many to hold.
    periods: Iterable[str] | None = None
    if period_count(day_from, day_to, every) <= _PERIODS_HELD:
        periods = list(period_ends(day_from, day_to, every))
    for walked in _rules(conn, known_at, jurisdiction, instrument, rule, q):
        states = walked.states
        index = -1  # the rule's state holding on the period's last day (-1: before every row)
        previous: dict[str, Any] | None = None
        for period in periods if periods is not None else period_ends(day_from, day_to, every):
            while index + 1 < len(states) and states[index + 1]["valid_from"] <= period:
                index += 1
            state = states[index] if index >= 0 else _NO_STATE
            changed = previous is not None and any(previous[k] != state[k] for k in _CHANGES)
            previous = state
            yield {
                **walked.fields,
                "status": state["status"],
                "rate_percent": state["rate_percent"],
                "conditions": state["conditions"],
                "period": period,
                "certain": state["certain"],
                "uncertain_because": state["uncertain_because"],
                "based_on": state["based_on"],
                "known_at": known_at,
                "changed": changed,
            }
