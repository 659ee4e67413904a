"""The read-model database: its tables, one connection per thread, and its tracking position."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import sqlite_utils

# Sentinels for open-ended intervals: they sort after every real value, as text.
END_OF_TIME = "9999-12-31~"  # after every real day, 9999-12-31 included: an open, exclusive end
END_OF_RECORD = "9999-12-31T23:59:59.999999Z"
START_OF_TIME = "0001-01-01"

# Bumped whenever tables or indexes change: a read model of another version is rebuilt.
SCHEMA_VERSION = 9

_TABLES = """
CREATE TABLE IF NOT EXISTS tracking (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    jurisdiction TEXT NOT NULL,
    instrument TEXT NOT NULL,
    targets TEXT NOT NULL,
    subjects TEXT NOT NULL,
    tags TEXT NOT NULL,
    links TEXT NOT NULL,
    subjects_text TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    position INTEGER NOT NULL,
    -- The rule's newest version and its record time: an answer as known now (most of them)
    -- reads the version here instead of looking it up among the rule's events.
    last_version INTEGER NOT NULL,
    last_recorded_at TEXT NOT NULL
);
-- The newest record time of all: whether the events an answer as known at some time needs are
-- all projected already.
CREATE INDEX IF NOT EXISTS rules_by_last_recorded ON rules (last_recorded_at);
-- The jurisdictions that rules name, for filter menus: one step along it per jurisdiction.
CREATE INDEX IF NOT EXISTS rules_by_jurisdiction ON rules (jurisdiction, registered_at);
-- Every event of every rule: its place, version and record time (a rule's version and history
-- at any known_at). Its data stays in the event store, read from there for a history. Keyed by
-- rule and record time (a rule's versions follow its record times): a rule's version at any
-- known_at is one step along the key, and a build writes the rows in key order.
CREATE TABLE IF NOT EXISTS rule_events (
    rule_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    position INTEGER NOT NULL,
    type TEXT NOT NULL,
    action_id TEXT,
    PRIMARY KEY (rule_id, recorded_at, version)
) WITHOUT ROWID;
-- Bitemporal state rows: the state a rule enters on valid_from, as known over
-- [known_from, known_to) in record time. A row holds until the next row of the rule known then
-- (a rule has a row from the first day of the calendar), so its end is not stored: a new action
-- at the end of a rule's history adds one row and rewrites none. One rule's row for a day is
-- the last one starting on or before it that is known then: a short walk back along the key.
CREATE TABLE IF NOT EXISTS states (
    rule_id TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    known_from TEXT NOT NULL,
    known_to TEXT NOT NULL,
    status TEXT NOT NULL,
    rate_percent REAL,
    conditions TEXT NOT NULL,
    since TEXT,
    until TEXT,
    certain INTEGER NOT NULL,
    uncertain_because TEXT NOT NULL,
    PRIMARY KEY (rule_id, valid_from, known_from)
) WITHOUT ROWID;
-- What states rest on: each live action's start day and record order, as known over
-- [known_from, known_to). A state starting on day D rests on the rule's actions known then that
-- start on or before D, in (start, order): the fold's own order. Kept apart from the states so
-- that an action recorded late does not rewrite every later state row to add its id.
CREATE TABLE IF NOT EXISTS action_starts (
    rule_id TEXT NOT NULL,
    effective_start TEXT NOT NULL,
    ord INTEGER NOT NULL,
    known_from TEXT NOT NULL,
    known_to TEXT NOT NULL,
    action_id TEXT NOT NULL,
    PRIMARY KEY (rule_id, effective_start, ord, known_from)
) WITHOUT ROWID;
-- The actions as currently known (corrections applied), for the timeline and search.
CREATE TABLE IF NOT EXISTS actions (
    rule_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    effective TEXT NOT NULL,
    effective_start TEXT NOT NULL,
    effective_end TEXT NOT NULL,
    summary TEXT NOT NULL,
    data TEXT NOT NULL,
    jurisdiction TEXT NOT NULL,
    instrument TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    position INTEGER NOT NULL,
    corrected INTEGER NOT NULL DEFAULT 0,
    retracted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rule_id, id)
);
CREATE INDEX IF NOT EXISTS actions_by_effective ON actions (effective_start, position);
-- The timeline filtered by one of these, in its order: a page walks the filter's own entries
-- instead of every action's (a jurisdiction holds a few percent of them).
CREATE INDEX IF NOT EXISTS actions_by_jurisdiction ON actions (jurisdiction, effective_start, position);
CREATE INDEX IF NOT EXISTS actions_by_instrument ON actions (instrument, effective_start, position);
CREATE INDEX IF NOT EXISTS actions_by_kind ON actions (kind, effective_start, position);
-- Which rules link to a rule (a rule's links are fixed at registration): the rules naming one,
-- found by its id instead of by reading every rule's links. Kept by a trigger, so every path
-- that writes the rules (a page of events, a build) keeps it.
CREATE TABLE IF NOT EXISTS rule_links (
    linked_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    PRIMARY KEY (linked_id, rule_id, relation)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS rules_links AFTER INSERT ON rules WHEN NEW.links != '[]' BEGIN
    INSERT OR IGNORE INTO rule_links (linked_id, rule_id, relation)
    SELECT value ->> 'rule', NEW.id, value ->> 'relation' FROM json_each(NEW.links);
END;
-- Idempotency keys, remembered with the request's fingerprint and what it stored.
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""


# The rows the projector writes, one named tuple per table: its fields are the table's columns
# (a test checks them against the tables above), and the writer's statements name them.


class RuleRow(NamedTuple):
    id: str
    title: str
    jurisdiction: str
    instrument: str
    targets: str
    subjects: str
    tags: str
    links: str
    subjects_text: str
    registered_at: str
    position: int
    last_version: int
    last_recorded_at: str


class RuleEventRow(NamedTuple):
    rule_id: str
    recorded_at: str
    version: int
    position: int
    type: str
    action_id: str | None


class StateRow(NamedTuple):
    rule_id: str
    valid_from: str
    known_from: str
    known_to: str
    status: str
    rate_percent: float | None
    conditions: str
    since: str | None
    until: str | None
    certain: int
    uncertain_because: str


class ActionStartRow(NamedTuple):
    rule_id: str
    effective_start: str
    ord: int
    known_from: str
    known_to: str
    action_id: str


class ActionRow(NamedTuple):
    rule_id: str
    id: str
    kind: str
    effective: str
    effective_start: str
    effective_end: str
    summary: str
    data: str
    jurisdiction: str
    instrument: str
    recorded_at: str
    position: int
    corrected: int
    retracted: int


class RequestRow(NamedTuple):
    key: str
    fingerprint: str
    rule_id: str
    position: int
    type: str
    object_id: str
    recorded_at: str


# Each table's row type, by table name.
ROW_TYPES: dict[str, type] = {
    "rules": RuleRow, "rule_events": RuleEventRow, "states": StateRow,
    "action_starts": ActionStartRow, "actions": ActionRow, "requests": RequestRow,
}


def _statements(script: str) -> list[str]:
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


TABLE_STATEMENTS = _statements(_TABLES)

# The indexes keyed across rules, which a build makes once its rows are written.
INDEXES_ACROSS_RULES = ("actions_by_effective", "actions_by_jurisdiction",
                        "actions_by_instrument", "actions_by_kind")

# The columns searched by full text, by table.
SEARCH_COLUMNS = {"rules": ["title", "subjects_text"], "actions": ["summary"]}


def _create_search(db: sqlite_utils.Database) -> None:
    """The full-text indexes missing from ``db``, with their triggers, filled from the rows."""
    tables = set(db.table_names())
    for table, columns in SEARCH_COLUMNS.items():
        if f"{table}_fts" in tables:
            continue
        try:
            db[table].enable_fts(columns, create_triggers=True, tokenize="porter")
        except sqlite3.OperationalError as exc:
            # Another process starting on the same file made it first.
            if "already exists" not in str(exc):
                raise


class _InTransaction:
    """A connection for sqlite-utils that runs its scripts a statement at a time, inside the
    caller's transaction (sqlite3's executescript commits first)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def executescript(self, script: str) -> None:
        for statement in _statements(script):
            self._conn.execute(statement)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


# The page cache of every connection to a read model, in KiB.
CACHE_KIB = 64 * 1024


def connect(path: Path) -> sqlite3.Connection:
    """A connection to a read-model file, as every reader and writer of it opens one."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=60000")
    # Rows of one rule land all over the indexes: a larger page cache than the default
    # 2 MiB keeps a bulk load from reading the same index pages again and again.
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    # Some builds of SQLite (Debian's among them) overwrite every freed page with zeros: a
    # rebuild, dropping the old read model, would write all of it once more. A read model holds
    # nothing the event store does not keep for ever, so there is nothing to hide.
    conn.execute("PRAGMA secure_delete=OFF")
    return conn


class ReadModel:
    """One SQLite file of read models; safe to share between threads and processes."""

    TRACKING_NAME = "projector"
    SCHEMA_NAME = "schema"
    # A random number drawn when the tables are made: it changes with every drop, so that a
    # projector can tell its own rows from a rebuild's.
    GENERATION_NAME = "generation"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.connection())

    def _create(self) -> None:
        # A read model of another layout goes before anything is made: this layout's statements
        # may not apply to its tables (an index on a column they lack).
        with self.write() as conn:
            if self._outdated(conn):
                self.replace_tables(conn)
        conn.executescript(_TABLES)
        self.create_search()
        with self.write() as conn:
            for name, value in ((self.SCHEMA_NAME, SCHEMA_VERSION),
                                (self.GENERATION_NAME, secrets.randbits(62))):
                conn.execute("INSERT OR IGNORE INTO tracking (name, position) VALUES (?, ?)",
                             (name, value))

    @classmethod
    def _outdated(cls, conn: sqlite3.Connection) -> bool:
        """Whether ``conn``'s file holds a read model of another layout (or of none known)."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'tracking'").fetchone() is None:
            return False
        schema = cls._tracked(conn, cls.SCHEMA_NAME)
        return schema != SCHEMA_VERSION and (schema is not None or bool(cls.position_in(conn)))

    @staticmethod
    def _tracked(conn: sqlite3.Connection, name: str) -> int | None:
        row = conn.execute("SELECT position FROM tracking WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def create_search(self) -> None:
        """The full-text indexes and the triggers that keep them; made from the rows if missing.

        sqlite-utils commits as it goes (executescript), so this runs outside ``write()``.
        """
        _create_search(sqlite_utils.Database(self.connection()))

    @staticmethod
    def create_search_in(conn: sqlite3.Connection) -> None:
        """:meth:`create_search` inside the caller's write transaction."""
        _create_search(sqlite_utils.Database(_InTransaction(conn)))

    def generation(self, conn: sqlite3.Connection | None = None) -> int:
        return self._tracked(conn or self.connection(), self.GENERATION_NAME) or 0

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; other writers (threads or processes) wait their turn."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for one answer."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")

    def position(self, conn: sqlite3.Connection | None = None) -> int:
        return self.position_in(conn or self.connection())

    @classmethod
    def position_in(cls, conn: sqlite3.Connection) -> int:
        """The position the read model on ``conn`` has projected up to (0: nothing yet)."""
        return cls._tracked(conn, cls.TRACKING_NAME) or 0

    @staticmethod
    def set_position(conn: sqlite3.Connection, position: int) -> None:
        conn.execute(
            "INSERT INTO tracking (name, position) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            (ReadModel.TRACKING_NAME, position),
        )

    def drop(self) -> None:
        """Remove every read model and its position, in one transaction (for a rebuild)."""
        with self.write() as conn:
            self.replace_tables(conn)
        self._create()

    @classmethod
    def replace_tables(cls, conn: sqlite3.Connection) -> None:
        """Drop every read model and make its tables again, empty, inside the caller's write
        transaction (the full-text indexes are left to :meth:`create_search_in`), with a new
        generation: other processes see the old tables until it commits."""
        for table in ("rules_fts", "actions_fts", "tracking", "rules", "rule_events", "states",
                      "action_starts", "actions", "requests", "rule_links"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in TABLE_STATEMENTS:  # executescript would commit first
            conn.execute(statement)
        for name, value in ((cls.SCHEMA_NAME, SCHEMA_VERSION),
                            (cls.GENERATION_NAME, secrets.randbits(62))):
            conn.execute("INSERT INTO tracking (name, position) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
