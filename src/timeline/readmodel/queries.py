"""Questions answered from the read models: indexed lookups, never a replay of the store."""

from __future__ import annotations

import bisect
import sqlite3
from typing import Any, Callable, Iterable, Mapping

from timeline.cursors import decode_timeline_cursor, encode_timeline_cursor
from timeline.domain.dates import PolicyDate
from timeline.domain.errors import NotFound
from timeline.events import RULE_REGISTERED
from timeline.fastjson import loads  # the read model's own JSON: the hot path of every answer
from timeline.readmodel.actions import known_actions
from timeline.readmodel.store import START_OF_TIME


def _rule(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "jurisdiction": row["jurisdiction"],
        "instrument": row["instrument"],
        "targets": loads(row["targets"]),
        "subjects": loads(row["subjects"]),
        "tags": loads(row["tags"]),
        "links": loads(row["links"]),
    }


def _state_fields(row: sqlite3.Row, based_on: list[str] | None = None) -> dict[str, Any]:
    """A stored state row's fields, as the contract names them; what the state rests on from
    the row's ``based_on`` column unless given."""
    return {
        "status": row["status"],
        "rate_percent": row["rate_percent"],
        "conditions": loads(row["conditions"]),
        "since": row["since"],
        "until": row["until"],
        "certain": bool(row["certain"]),
        "uncertain_because": loads(row["uncertain_because"]),
        "based_on": loads(row["based_on"]) if based_on is None else based_on,
    }


def _state(rule: dict, row: sqlite3.Row, as_of: str, known_at: str, version: int) -> dict[str, Any]:
    return {"rule": rule, "as_of": as_of, "known_at": known_at, **_state_fields(row),
            "version": version}


# The ids of the actions a state starting on day :day rests on, as known at :known_at: those
# starting on or before it, in the fold's order (start day, then record order).
_BASED_ON_SQL = """
SELECT json_group_array(action_id) FROM (
    SELECT action_id FROM action_starts
    WHERE rule_id = {rule} AND effective_start <= {day}
      AND known_from <= :known_at AND known_to > :known_at
    ORDER BY effective_start, ord)
"""

# A rule r and its state row s (only the columns an answer shows: the rule's row is wide): the
# state, what it rests on, and the rule's version (the newest event recorded by :known_at: on
# the rule's row when that is the newest, else one step along the key of its events).
_STATE_SELECT = f"""
SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, r.subjects, r.tags, r.links,
       s.status, s.rate_percent, s.conditions, s.since, s.until, s.certain,
       s.uncertain_because,
       ({_BASED_ON_SQL.format(rule="r.id", day="s.valid_from")}) AS based_on,
       CASE WHEN r.last_recorded_at <= :known_at THEN r.last_version ELSE
       (SELECT e.version FROM rule_events e
        WHERE e.rule_id = r.id AND e.recorded_at <= :known_at
        ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) END AS version
"""

# Each rule's one row that holds on :as_of as known at :known_at, found by walking back from
# :as_of along the rule's rows (the states key). All index lookups, however long the history.
_RULE_STATE_SQL = _STATE_SELECT + """
FROM rules r
JOIN states s ON s.rule_id = r.id AND s.valid_from = (
    SELECT valid_from FROM states
    WHERE rule_id = r.id AND valid_from <= :as_of
      AND known_from <= :known_at AND known_to > :known_at
    ORDER BY valid_from DESC LIMIT 1)
  AND s.known_from <= :known_at AND s.known_to > :known_at
WHERE r.registered_at <= :known_at
"""


# The same for one rule: a walk back along its rows from :as_of, one index descent fewer.
_ONE_RULE_STATE_SQL = _STATE_SELECT + """
FROM rules r JOIN states s ON s.rule_id = r.id
WHERE r.id = :rule_id AND r.registered_at <= :known_at AND s.valid_from <= :as_of
  AND s.known_from <= :known_at AND s.known_to > :known_at
ORDER BY s.valid_from DESC LIMIT 1
"""


def rule_state(conn: sqlite3.Connection, rule_id: str, as_of: str, known_at: str) -> dict[str, Any]:
    """One rule's state on ``as_of`` as known at ``known_at``."""
    row = conn.execute(
        _ONE_RULE_STATE_SQL, {"as_of": as_of, "known_at": known_at, "rule_id": rule_id}
    ).fetchone()
    if row is None:
        raise NotFound(f"No rule {rule_id!r} was registered at {known_at}.")
    return _state(_rule(row), row, as_of, known_at, row["version"])


def rule_filter_sql(
    jurisdiction: str | None, instrument: str | None, q: str | None
) -> tuple[str, dict[str, Any]]:
    """The ``AND ...`` clauses keeping the rules ``r`` that match these filters, and their
    parameters (a search ``q`` matches a rule's text or its live actions' text)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if jurisdiction:
        clauses.append("r.jurisdiction = :jurisdiction")
        params["jurisdiction"] = jurisdiction
    if instrument:
        clauses.append("r.instrument = :instrument")
        params["instrument"] = instrument
    if q:
        clauses.append(
            "(r.rowid IN (SELECT rowid FROM rules_fts WHERE rules_fts MATCH :q) OR "
            "r.id IN (SELECT a.rule_id FROM actions a JOIN actions_fts f ON f.rowid = a.rowid "
            "WHERE actions_fts MATCH :q AND a.retracted = 0))"
        )
        params["q"] = fts_query(q)
    return "".join(f" AND {c}" for c in clauses), params


def fts_query(text: str) -> str:
    """Every word must match (as a prefix), whatever punctuation the user typed."""
    words = ["".join(ch for ch in word if ch.isalnum()) for word in text.split()]
    return " ".join(f'"{w}"*' for w in words if w) or '""'


OPEN_START = START_OF_TIME
OPEN_END = "9999-12-31"


def state_segments(conn: sqlite3.Connection, rule_id: str, known_at: str) -> list[dict[str, Any]]:
    """A rule's states over valid time as known at ``known_at``: constant stretches
    ``[valid_from, valid_to)`` in order, the first from OPEN_START and the last to OPEN_END."""
    if not rule_exists(conn, rule_id, known_at):
        raise NotFound(f"No rule {rule_id!r} was registered at {known_at}.")
    rows = conn.execute(
        "SELECT valid_from, lead(valid_from, 1, ?) OVER (ORDER BY valid_from) AS valid_to, "
        "status, rate_percent, conditions, since, until, certain, uncertain_because "
        "FROM states WHERE rule_id = ? AND known_from <= ? AND known_to > ? ORDER BY valid_from",
        (OPEN_END, rule_id, known_at, known_at),
    ).fetchall()
    # What each segment rests on is a prefix of the rule's actions in the fold's order.
    starts = conn.execute(
        "SELECT effective_start, action_id FROM action_starts WHERE rule_id = ? "
        "AND known_from <= ? AND known_to > ? ORDER BY effective_start, ord",
        (rule_id, known_at, known_at),
    ).fetchall()
    days = [start for start, _ in starts]
    ids = [action_id for _, action_id in starts]
    return [
        {"valid_from": row["valid_from"], "valid_to": row["valid_to"],
         **_state_fields(row, ids[:bisect.bisect_right(days, row["valid_from"])])}
        for row in rows
    ]


def jurisdictions(conn: sqlite3.Connection, known_at: str) -> list[str]:
    """The jurisdictions of the rules registered at ``known_at``, for filter menus."""
    # A skip-scan along rules_by_jurisdiction: one index step per jurisdiction, not per rule.
    rows = conn.execute(
        "WITH RECURSIVE j(code) AS ("
        " SELECT min(jurisdiction) FROM rules WHERE registered_at <= :known_at"
        " UNION ALL SELECT (SELECT min(jurisdiction) FROM rules WHERE jurisdiction > j.code"
        " AND registered_at <= :known_at) FROM j WHERE j.code IS NOT NULL)"
        " SELECT code FROM j WHERE code IS NOT NULL", {"known_at": known_at}
    ).fetchall()
    return [row[0] for row in rows]


def rule_facets(conn: sqlite3.Connection, rule_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each registered rule's jurisdiction and instrument (fixed at registration), by rule id."""
    ids = list(dict.fromkeys(rule_ids))
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):  # well under SQLite's limit on parameters
        chunk = ids[start:start + 500]
        rows = conn.execute(
            f"SELECT id, jurisdiction, instrument FROM rules WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        found.update((row[0], (row[1], row[2])) for row in rows)
    return found


def rules_linking_to(conn: sqlite3.Connection, rule_id: str, known_at: str,
                     ) -> list[tuple[str, str]]:
    """The rules registered at ``known_at`` that link to ``rule_id``: (their id, relation)."""
    rows = conn.execute(
        "SELECT l.rule_id, l.relation FROM rule_links l JOIN rules r ON r.id = l.rule_id "
        "WHERE l.linked_id = ? AND r.registered_at <= ? ORDER BY l.rule_id, l.relation",
        (rule_id, known_at),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def rule_exists(conn: sqlite3.Connection, rule_id: str, known_at: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM rules WHERE id = ? AND registered_at <= ?", (rule_id, known_at)
    ).fetchone() is not None


def history(
    conn: sqlite3.Connection, rule_id: str, known_at: str,
    event_data: Callable[[str, int], Mapping[int, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """A rule's actions as known at ``known_at``, in effective order, with their corrections.

    ``event_data(rule_id, version)`` gives the data of the rule's events up to ``version``, by
    version (the event store keeps it; the read model keeps where and when each event stands).
    """
    if not rule_exists(conn, rule_id, known_at):
        raise NotFound(f"No rule {rule_id!r} was registered at {known_at}.")
    rows = conn.execute(
        "SELECT position, version, type, recorded_at FROM rule_events WHERE rule_id = ? "
        "AND type != ? AND recorded_at <= ? ORDER BY position",
        (rule_id, RULE_REGISTERED, known_at),
    ).fetchall()
    data = event_data(rule_id, rows[-1]["version"]) if rows else {}
    actions = known_actions({"position": row["position"], "type": row["type"],
                             "recorded_at": row["recorded_at"], "data": data[row["version"]]}
                            for row in rows)
    items = []
    for known in sorted(
        actions.values(),
        key=lambda k: (PolicyDate.parse(k.fields["effective"]).start, k.position),
    ):
        items.append({
            **known.fields,
            "rule_id": rule_id,
            "recorded_at": known.recorded_at,
            "position": known.position,
            "original": known.original if known.corrections else None,
            "corrections": known.corrections,
            "retraction": known.retraction,
            "retracted": known.retraction is not None,
        })
    return items


# Below this many matching actions, a search's timeline sorts its matches; above, it walks the
# actions in order (see timeline). A rule that matches brings all its actions: it is counted as
# the mean rule's ten, as the full-text index counts rules cheaply and their actions only by
# reading them.
SPARSE_MATCHES = 20_000
ACTIONS_PER_RULE = 10


def _matches_fewer_than(conn: sqlite3.Connection, match: str, bound: int) -> bool:
    """Whether fewer than about ``bound`` actions match a full-text query, themselves or by
    their rule: the full-text indexes' matches counted up to the bound."""
    actions, rules = conn.execute(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM actions_fts WHERE actions_fts MATCH :q "
        "LIMIT :bound)), (SELECT count(*) FROM (SELECT 1 FROM rules_fts WHERE rules_fts MATCH :q "
        "LIMIT :bound))",
        {"q": match, "bound": bound},
    ).fetchone()
    return actions + rules * ACTIONS_PER_RULE < bound


def timeline(
    conn: sqlite3.Connection,
    *,
    day_from: str | None = None,
    day_to: str | None = None,
    jurisdiction: str | None = None,
    instrument: str | None = None,
    rule: str | None = None,
    kind: str | None = None,
    q: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Actions as currently known, in effective order, a page at a time."""
    clauses = ["a.retracted = 0"]
    params: dict[str, Any] = {}
    filters = (
        ("a.effective_end >= :day_from", "day_from", day_from),  # periods that reach the range
        ("a.effective_start <= :day_to", "day_to", day_to),
        ("a.jurisdiction = :jurisdiction", "jurisdiction", jurisdiction),
        ("a.instrument = :instrument", "instrument", instrument),
        ("a.rule_id = :rule", "rule", rule),
        ("a.kind = :kind", "kind", kind),
    )
    for clause, name, value in filters:
        if value:
            clauses.append(clause)
            params[name] = value
    if day_from:
        # An action's period lies within the year it starts in, so one that reaches day_from
        # starts in its year or later: a bound the index of effective days can start from.
        clauses.append("a.effective_start >= :from_year")
        params["from_year"] = day_from[:4] + "-01-01"
    if q:
        params["q"] = fts_query(q)
        # A word found in few actions: their rows are fetched by the full-text indexes and
        # sorted. A common one: the actions are walked in order, each looked up among the
        # matches (the unary + keeps SQLite from fetching and sorting every match).
        actions = "a.rowid IN (SELECT rowid FROM actions_fts WHERE actions_fts MATCH :q)"
        rules = "(SELECT rowid FROM rules_fts WHERE rules_fts MATCH :q)"
        if _matches_fewer_than(conn, params["q"], SPARSE_MATCHES):
            clauses.append(f"({actions} OR a.rule_id IN (SELECT id FROM rules WHERE rowid IN {rules}))")
        else:
            clauses.append(f"(+{actions} OR +r.rowid IN {rules})")
    order = "DESC" if newest_first else "ASC"
    if cursor:
        start, position = decode_timeline_cursor(cursor)
        op = "<" if newest_first else ">"
        clauses.append(f"(a.effective_start, a.position) {op} (:c_start, :c_position)")
        params.update(c_start=start, c_position=position)
    rows = conn.execute(
        "SELECT a.*, r.title AS rule_title, r.targets AS rule_targets FROM actions a "
        "JOIN rules r ON r.id = a.rule_id WHERE " + " AND ".join(clauses)
        + f" ORDER BY a.effective_start {order}, a.position {order} LIMIT :limit",
        {**params, "limit": limit + 1},
    ).fetchall()
    items = []
    for row in rows[:limit]:
        items.append({
            **loads(row["data"]),
            "rule_id": row["rule_id"],
            "rule_title": row["rule_title"],
            "jurisdiction": row["jurisdiction"],
            "instrument": row["instrument"],
            "targets": loads(row["rule_targets"]),
            "recorded_at": row["recorded_at"],
            "position": row["position"],
            "corrected": bool(row["corrected"]),
        })
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_timeline_cursor(last["effective_start"], last["position"])
    return items, next_cursor


def event_at(conn: sqlite3.Connection, rule_id: str, version: int) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT position, recorded_at FROM rule_events WHERE rule_id = ? AND version = ?",
        (rule_id, version),
    ).fetchone()


def request_by_key(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT * FROM requests WHERE key = ?",
        (key,),
    ).fetchone()


def last_recorded_at(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT max(last_recorded_at) FROM rules").fetchone()
    return row[0] if row else None


# Paged lists and their counts -----------------------------------------------------------------


def _keyset_page(conn: sqlite3.Connection, sql: str, params: dict[str, Any], limit: int,
                 after: str | None, before: str | None) -> tuple[list[sqlite3.Row], bool]:
    """Up to ``limit`` rows of ``sql`` (over rules ``r``) in rule id order after (or before) a
    rule id, and whether more follow (precede): keyset paging along the rules' key, so a page
    costs its own rows wherever it starts."""
    if before is not None:
        keyset, order, keys = " AND r.id < :before", "DESC", {"before": before}
    elif after is not None:
        keyset, order, keys = " AND r.id > :after", "ASC", {"after": after}
    else:
        keyset, order, keys = "", "ASC", {}
    rows = conn.execute(sql + keyset + f" ORDER BY r.id {order} LIMIT :limit",
                        {**params, **keys, "limit": limit + 1}).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()
    return rows, more


def state_page(
    conn: sqlite3.Connection,
    as_of: str,
    known_at: str,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    jurisdiction: str | None = None,
    instrument: str | None = None,
    q: str | None = None,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` rules' states on a day, in rule id order, after (or before) a rule id; and
    whether more rules follow (precede) the page. Keyset paging along the rules' key: a page
    costs its own rows, wherever it starts."""
    where, params = rule_filter_sql(jurisdiction, instrument, q)
    if status:
        where += " AND s.status = :status"
        params["status"] = status
    rows, more = _keyset_page(conn, _RULE_STATE_SQL + where,
                              {"as_of": as_of, "known_at": known_at, **params}, limit, after, before)
    return [_state(_rule(row), row, as_of, known_at, row["version"]) for row in rows], more


# A state row of rule r that holds on :{day} as known at :known_at, joined as {alias}.
_STATE_ON = """
JOIN states {alias} ON {alias}.rule_id = r.id AND {alias}.valid_from = (
    SELECT valid_from FROM states
    WHERE rule_id = r.id AND valid_from <= :{day}
      AND known_from <= :known_at AND known_to > :known_at
    ORDER BY valid_from DESC LIMIT 1)
  AND {alias}.known_from <= :known_at AND {alias}.known_to > :known_at
"""

# Rules whose state rows on :day_from (b) and :day_to (a) differ in status, rate or conditions
# (conditions are stored as canonical JSON text: equal lists, equal text).
_CHANGED_FROM = (
    "FROM rules r" + _STATE_ON.format(alias="b", day="day_from")
    + _STATE_ON.format(alias="a", day="day_to")
    + " WHERE r.registered_at <= :known_at AND (b.status IS NOT a.status"
      " OR b.rate_percent IS NOT a.rate_percent OR b.conditions IS NOT a.conditions)"
)

_SIDE_COLUMNS = ("status", "rate_percent", "conditions", "since", "until", "certain",
                 "uncertain_because")


def _side_select(alias: str) -> str:
    columns = ", ".join(f"{alias}.{c} AS {alias}_{c}" for c in _SIDE_COLUMNS)
    based_on = _BASED_ON_SQL.format(rule="r.id", day=f"{alias}.valid_from")
    return f"{columns}, ({based_on}) AS {alias}_based_on"


_DIFF_PAGE_SQL = f"""
SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, r.subjects, r.tags, r.links,
       {_side_select("b")}, {_side_select("a")},
       CASE WHEN r.last_recorded_at <= :known_at THEN r.last_version ELSE
       (SELECT e.version FROM rule_events e
        WHERE e.rule_id = r.id AND e.recorded_at <= :known_at
        ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) END AS version
{_CHANGED_FROM}"""


def _side(row: sqlite3.Row, alias: str) -> dict[str, Any]:
    return {c: row[f"{alias}_{c}"] for c in (*_SIDE_COLUMNS, "based_on")}


def diff_page(
    conn: sqlite3.Connection,
    day_from: str,
    day_to: str,
    known_at: str,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    jurisdiction: str | None = None,
    instrument: str | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` changes between two days, in rule id order after (or before) a rule id,
    found in SQL as the rules are walked in order; and whether more changes follow (precede)."""
    where, params = rule_filter_sql(jurisdiction, instrument, None)
    rows, more = _keyset_page(conn, _DIFF_PAGE_SQL + where,
                              {"day_from": day_from, "day_to": day_to, "known_at": known_at,
                               **params}, limit, after, before)
    changes = []
    for row in rows:
        rule = _rule(row)
        changes.append({
            "rule_id": rule["id"],
            "before": {"rule": rule, "as_of": day_from, "known_at": known_at,
                       **_state_fields(_side(row, "b")), "version": row["version"]},
            "after": {"rule": rule, "as_of": day_to, "known_at": known_at,
                      **_state_fields(_side(row, "a")), "version": row["version"]},
        })
    return changes, more


# The first day of the state row of rule r that holds on :{day} as known at :known_at.
_ROW_ON = """(SELECT valid_from FROM states
    WHERE rule_id = r.id AND valid_from <= :{day}
      AND known_from <= :known_at AND known_to > :known_at
    ORDER BY valid_from DESC LIMIT 1)"""

# The state row of a rule (t.id) starting on {start}, as known at :known_at, joined as {alias}.
_ROW_AT = """
JOIN states {alias} ON {alias}.rule_id = t.id AND {alias}.valid_from = t.{start}
  AND {alias}.known_from <= :known_at AND {alias}.known_to > :known_at"""


def state_counts(
    conn: sqlite3.Connection,
    as_of: str,
    known_at: str,
    jurisdiction: str | None = None,
    instrument: str | None = None,
    q: str | None = None,
) -> list[tuple[str, str, str, int]]:
    """How many rules are in each (status, jurisdiction, instrument) on a day: one aggregate
    query, for the counts above a paged list. Each rule's status is one walk back along its
    rows, materialised before grouping (so the walk runs once per rule, not once per use)."""
    where, params = rule_filter_sql(jurisdiction, instrument, q)
    status = _ROW_ON.replace("SELECT valid_from", "SELECT status").format(day="as_of")
    rows = conn.execute(
        f"WITH t AS MATERIALIZED (SELECT {status} AS status, r.jurisdiction, r.instrument "
        f"FROM rules r WHERE r.registered_at <= :known_at{where}) "
        "SELECT status, jurisdiction, instrument, count(*) FROM t WHERE status IS NOT NULL "
        "GROUP BY status, jurisdiction, instrument",
        {"as_of": as_of, "known_at": known_at, **params},
    ).fetchall()
    return [tuple(row) for row in rows]


def diff_counts(
    conn: sqlite3.Connection,
    day_from: str,
    day_to: str,
    known_at: str,
    jurisdiction: str | None = None,
    instrument: str | None = None,
) -> list[tuple[str, str, int]]:
    """How many rules changed between two days, by status on the first and on the second.
    A rule whose row on both days is the same row did not change: only the others' rows are
    read and compared."""
    where, params = rule_filter_sql(jurisdiction, instrument, None)
    rows = conn.execute(
        f"WITH t AS MATERIALIZED (SELECT r.id, {_ROW_ON.format(day='day_from')} AS row_from, "
        f"{_ROW_ON.format(day='day_to')} AS row_to FROM rules r "
        f"WHERE r.registered_at <= :known_at{where}) "
        "SELECT b.status, a.status, count(*) FROM t"
        + _ROW_AT.format(alias="b", start="row_from") + _ROW_AT.format(alias="a", start="row_to")
        + " WHERE t.row_from IS NOT t.row_to AND (b.status IS NOT a.status"
          " OR b.rate_percent IS NOT a.rate_percent OR b.conditions IS NOT a.conditions)"
          " GROUP BY b.status, a.status",
        {"day_from": day_from, "day_to": day_to, "known_at": known_at, **params},
    ).fetchall()
    return [tuple(row) for row in rows]


def actions_between(
    conn: sqlite3.Connection, rule_ids: list[str], low: str, high: str
) -> dict[str, list[dict[str, Any]]]:
    """The live actions (as currently known) of some rules that start after ``low`` and on or
    before ``high``, by rule, in effective order: one lookup per rule along the actions' key."""
    found: dict[str, list[dict[str, Any]]] = {rule_id: [] for rule_id in rule_ids}
    if not rule_ids:
        return found
    marks = ", ".join("?" * len(rule_ids))
    rows = conn.execute(
        f"SELECT rule_id, id, data FROM actions WHERE rule_id IN ({marks}) AND retracted = 0 "
        "AND effective_start > ? AND effective_start <= ? "
        "ORDER BY rule_id, effective_start, position",
        (*rule_ids, low, high),
    ).fetchall()
    for row in rows:
        found[row["rule_id"]].append({**loads(row["data"]), "id": row["id"]})
    return found


def rules_changed_since(conn: sqlite3.Connection, rule_ids: list[str], known_at: str) -> set[str]:
    """Which of these rules have events recorded after ``known_at``."""
    if not rule_ids:
        return set()
    marks = ", ".join("?" * len(rule_ids))
    rows = conn.execute(
        f"SELECT id FROM rules WHERE id IN ({marks}) AND last_recorded_at > ?", (*rule_ids, known_at)
    ).fetchall()
    return {row[0] for row in rows}
