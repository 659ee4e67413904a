"""A database to explore: the tracker as known at one instant, as a self-contained SQLite file.

Written with sqlite-utils, for Datasette and sqlite-utils to open as it is: plain column types
(dates and instants as ISO text, booleans as 0 or 1, lists and objects as JSON text), foreign
keys and indexes where a reader joins, full-text search on rules and actions, and a Datasette
metadata file beside it that describes every table and column.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from timeline import __version__, fastjson
from timeline.domain.dates import PolicyDate, parse_instant
from timeline.domain.errors import TimelineError

# Rows written per statement: a few MiB at most, whatever the size of the tracker.
BATCH = 1000

DEFAULT_LICENSE = "MIT"
DEFAULT_LICENSE_URL = "https://opensource.org/license/mit"


class PublishError(TimelineError):
    """A database that cannot be written where asked."""


# Every table and column, described once: the tables are made from this, and the metadata
# file says it. Each column: (SQLite type, description).
TABLES: dict[str, dict[str, Any]] = {
    "rules": {
        "description": "One row per rule (a policy measure followed over time) registered at "
                       "the vintage's known_at.",
        "pk": "id",
        "columns": {
            "id": (str, "The rule's id, a slug chosen when it was registered."),
            "title": (str, "What the rule is, in a line."),
            "jurisdiction": (str, "Who issues it: an ISO 3166-1 alpha-2 code, or EU."),
            "instrument": (str, "export_control, import_tariff, purchase_restriction, "
                                "investment_restriction, sanction, legislation, "
                                "trade_commitment or other."),
            "targets": (str, "JSON array of the jurisdiction codes it affects."),
            "subjects": (str, "JSON array of the products or sectors it concerns."),
            "tags": (str, "JSON array of tags."),
            "registered_at": (str, "When the tracker registered it (RFC 3339, UTC)."),
        },
        "fts": ["title", "subjects", "tags"],
    },
    "links": {
        "description": "How rules name each other: one row per link a rule's registration "
                       "gives.",
        "pk": ("rule_id", "relation", "linked_rule_id"),
        "columns": {
            "rule_id": (str, "The rule that names the link."),
            "relation": (str, "amends, blocks, retaliates_against, replaces or related: "
                              "rule_id <relation> linked_rule_id."),
            "linked_rule_id": (str, "The rule it names."),
        },
        "foreign_keys": [("rule_id", "rules", "id"), ("linked_rule_id", "rules", "id")],
        "indexes": [["linked_rule_id"]],
    },
    "actions": {
        "description": "One row per policy action recorded by known_at, with the corrections "
                       "known by then applied, and retracted ones kept and marked. Join "
                       "sources and corrections on (rule_id, action_id) = (rule_id, id).",
        "pk": ("rule_id", "id"),
        "columns": {
            "rule_id": (str, "The rule it acts on."),
            "id": (str, "The action's id, unique within its rule."),
            "kind": (str, "ban, restrict, ease, fee, pause, resume, lift or propose."),
            "effective": (str, "When it takes effect in the world: YYYY, YYYY-MM or "
                               "YYYY-MM-DD, as precise as known."),
            "effective_start": (str, "The first day of effective's period (YYYY-MM-DD), for "
                                     "sorting and ranges."),
            "announced": (str, "When it was announced, if known (YYYY, YYYY-MM or YYYY-MM-DD)."),
            "rate_percent": (float, "The fee, tariff or levy set, in percent (fee actions only)."),
            "until": (str, "When a pause ends by itself, if it says (pause actions only)."),
            "conditions": (str, "JSON array of the conditions it sets (null: it sets none)."),
            "summary": (str, "What it does, in words."),
            "recorded_at": (str, "When the tracker recorded it (RFC 3339, UTC)."),
            "position": (int, "Its place in the tracker's event feed."),
            "corrected": (int, "1 if corrections known by known_at changed it, else 0."),
            "original": (str, "JSON object of its fields as first recorded, when corrected."),
            "retracted": (int, "1 if it was withdrawn as recorded in error by known_at, else 0: "
                               "a retracted action has no effect on any state."),
            "retraction_reason": (str, "Why it was retracted."),
            "retracted_at": (str, "When the retraction was recorded (RFC 3339, UTC)."),
        },
        "foreign_keys": [("rule_id", "rules", "id")],
        "indexes": [["effective_start"], ["kind"]],
        "fts": ["summary", "conditions"],
    },
    "sources": {
        "description": "The sources each action cites, in the order given (as corrected by "
                       "known_at).",
        "pk": ("rule_id", "action_id", "number"),
        "columns": {
            "rule_id": (str, "The action's rule."),
            "action_id": (str, "The action (actions.id within rule_id)."),
            "number": (int, "1 for the first source the action cites, 2 for the next, ..."),
            "title": (str, "The source's title."),
            "url": (str, "Where it is, if given."),
            "publisher": (str, "Who published it, if given."),
            "published": (str, "When it was published, if given (YYYY, YYYY-MM or YYYY-MM-DD)."),
            "quote": (str, "The words in it that the action rests on, if given."),
        },
        "foreign_keys": [("rule_id", "rules", "id")],
    },
    "corrections": {
        "description": "Corrections recorded by known_at: each replaced some fields of an "
                       "earlier action, and says why. Nothing stored was edited.",
        "pk": "id",
        "columns": {
            "id": (str, "The correction's id."),
            "rule_id": (str, "The corrected action's rule."),
            "action_id": (str, "The corrected action (actions.id within rule_id)."),
            "reason": (str, "Why it was corrected."),
            "changes": (str, "JSON object of the fields it replaced and their new values "
                             "(null: the field was removed)."),
            "previous": (str, "JSON object of those fields' values before it."),
            "recorded_at": (str, "When the correction was recorded (RFC 3339, UTC)."),
            "position": (int, "Its place in the tracker's event feed."),
        },
        "foreign_keys": [("rule_id", "rules", "id")],
        "indexes": [["rule_id", "action_id"]],
    },
    "spells": {
        "description": "One row per rule per stretch of valid time in which its state stays "
                       "the same, as known at known_at (the /api/v1/spells download): a rule's "
                       "first spell starts on its first action's day.",
        "pk": ("rule_id", "valid_from"),
        "columns": {
            "rule_id": (str, "The rule."),
            "title": (str, "The rule's title."),
            "jurisdiction": (str, "The rule's jurisdiction code."),
            "instrument": (str, "The rule's instrument."),
            "targets": (str, "JSON array of the rule's target codes."),
            "subjects": (str, "JSON array of the rule's subjects."),
            "status": (str, "none, proposed, restricted, banned, eased, in_force, paused or "
                            "lifted."),
            "rate_percent": (float, "The rate in force, in percent (null: none)."),
            "conditions": (str, "JSON array of the conditions in force."),
            "valid_from": (str, "The spell's first day (YYYY-MM-DD)."),
            "valid_to": (str, "The first day after it (YYYY-MM-DD); null while it holds."),
            "certain": (int, "0 if imprecise dates (a month or a year) leave it unsure whether "
                             "the state holds on the spell's days, else 1."),
            "uncertain_because": (str, "JSON array of the action ids whose imprecise dates make "
                                       "it uncertain."),
            "based_on": (str, "JSON array of the action ids applied, in order."),
            "known_at": (str, "The vintage: what the tracker knew at this instant (RFC 3339)."),
        },
        "foreign_keys": [("rule_id", "rules", "id")],
        "indexes": [["status"], ["valid_from"]],
    },
    "vintage": {
        "description": "One row: the instant this database answers as of, and what made it.",
        "pk": "known_at",
        "columns": {
            "known_at": (str, "Every table answers as the tracker knew it at this instant "
                              "(RFC 3339, UTC); publishing again with it gives the same rows."),
            "made_by": (str, "The software and version that wrote the file."),
        },
    },
}

def metadata_path(out: Path) -> Path:
    """Where the Datasette metadata file of ``out`` goes: ``OUT.metadata.json`` beside it."""
    return out.with_name(out.stem + ".metadata.json")


def publish(tracker: Any, out: Path, known_at: datetime | None = None, *, replace: bool = False,
            license: str = DEFAULT_LICENSE,
            license_url: str | None = DEFAULT_LICENSE_URL) -> str:
    """Write the database and its metadata file; returns the ``known_at`` they answer for.

    The file is made beside ``out`` and moved there when complete, so ``out`` is never half
    written.
    """
    out = Path(out)
    meta = metadata_path(out)
    for path in (out, meta):
        if path.is_dir():
            raise PublishError(f"{path} is a folder, not a file.", {"out": "is a folder"})
    if not out.parent.is_dir():
        raise PublishError(f"{out.parent}: no such folder.", {"out": "no such folder"})
    for path in (out, meta):
        if path.exists() and not replace:
            raise PublishError(f"{path} exists; give --replace to overwrite it.",
                               {"out": "exists"})
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        at = _write(tracker, partial, known_at)
        _write_metadata(partial.with_name(partial.name + ".json"), out.stem, at, license,
                        license_url)
    except BaseException:
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".json").unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    os.replace(partial.with_name(partial.name + ".json"), meta)
    return at


def _create_tables(db: sqlite_utils.Database) -> None:
    for name, table in TABLES.items():
        db[name].create({column: kind for column, (kind, _) in table["columns"].items()},
                        pk=table["pk"], foreign_keys=table.get("foreign_keys", []),
                        not_null={table["pk"]} if isinstance(table["pk"], str)
                        else set(table["pk"]))


def _create_indexes(db: sqlite_utils.Database) -> None:
    """The indexes a reader joins and filters by, and full-text search, made once the rows are
    in (one sort each, instead of keeping them up to date row by row)."""
    for name, table in TABLES.items():
        for columns in table.get("indexes", []):
            db[name].create_index(columns)
        if table.get("fts"):
            db[name].enable_fts(table["fts"], tokenize="porter")


def _write(tracker: Any, path: Path, known_at: datetime | None) -> str:
    try:
        db = sqlite_utils.Database(path)
        db.execute("PRAGMA synchronous=OFF")  # a new file, moved into place only when complete
    except (OSError, sqlite3.Error) as exc:
        raise PublishError(f"{path.parent}: cannot be written ({exc}).") from None
    try:
        _create_tables(db)
        at, histories = tracker.histories(known_at)
        db["vintage"].insert({"known_at": at, "made_by": f"timeline {__version__}"})
        with Batches(db) as batches:
            for rule, items in histories:
                batches.add("rules", _rule_row(rule))
                for link in rule["links"]:
                    batches.add("links", {"rule_id": rule["id"], "relation": link["relation"],
                                          "linked_rule_id": link["rule"]})
                for item in items:
                    batches.add("actions", _action_row(item))
                    for number, source in enumerate(item.get("sources", []), start=1):
                        batches.add("sources", {"rule_id": rule["id"], "action_id": item["id"],
                                                "number": number, **source})
                    for correction in item["corrections"]:
                        batches.add("corrections", _correction_row(rule["id"], item["id"],
                                                                   correction))
            _, spells = tracker.spells(parse_instant(at))  # the /api/v1/spells rows
            for spell in spells:
                batches.add("spells", _plain(spell))
        _create_indexes(db)
        db.execute("ANALYZE")  # statistics for the query planner of whoever opens the file
        return at
    finally:
        db.close()


class Batches:
    """Rows gathered by table and inserted ``BATCH`` at a time, all in one transaction."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.pending: dict[str, list[dict[str, Any]]] = {}

    def __enter__(self) -> Batches:
        self.db.execute("BEGIN")
        return self

    def add(self, table: str, row: dict[str, Any]) -> None:
        rows = self.pending.setdefault(table, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self.flush(table)

    def flush(self, table: str) -> None:
        rows = self.pending.pop(table, [])
        if rows:
            # Straight to the connection: sqlite-utils' insert_all commits as it goes.
            columns = list(TABLES[table]["columns"])
            self.db.conn.executemany(
                f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                [[row.get(c) for c in columns] for row in rows])

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.db.execute("ROLLBACK")
            return
        for table in list(self.pending):
            self.flush(table)
        self.db.execute("COMMIT")


def _json(value: Any) -> str | None:
    return None if value is None else fastjson.dumps(value)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row with lists and objects as JSON text, and booleans as 0 or 1."""
    return {k: (_json(v) if isinstance(v, (list, dict)) else int(v) if isinstance(v, bool) else v)
            for k, v in row.items()}


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    return _plain({name: rule[name] for name in TABLES["rules"]["columns"]})


def _action_row(item: dict[str, Any]) -> dict[str, Any]:
    retraction = item["retraction"] or {}
    return {
        "rule_id": item["rule_id"], "id": item["id"], "kind": item["kind"],
        "effective": item["effective"],
        "effective_start": PolicyDate.parse(item["effective"]).start.isoformat(),
        "announced": item.get("announced"), "rate_percent": item.get("rate_percent"),
        "until": item.get("until"), "conditions": _json(item.get("conditions")),
        "summary": item.get("summary", ""), "recorded_at": item["recorded_at"],
        "position": item["position"], "corrected": int(bool(item["corrections"])),
        "original": _json(item["original"]), "retracted": int(item["retracted"]),
        "retraction_reason": retraction.get("reason"), "retracted_at": retraction.get("recorded_at"),
    }


def _correction_row(rule_id: str, action_id: str, correction: dict[str, Any]) -> dict[str, Any]:
    return {"id": correction["id"], "rule_id": rule_id, "action_id": action_id,
            "reason": correction["reason"], "changes": _json(correction["changes"]),
            "previous": _json(correction["previous"]), "recorded_at": correction["recorded_at"],
            "position": correction["position"]}


def datasette_metadata(database: str, known_at: str, license: str = DEFAULT_LICENSE,
                       license_url: str | None = DEFAULT_LICENSE_URL) -> dict[str, Any]:
    """Datasette's metadata for the database named ``database``: source, vintage, licence,
    and a description of every table and column."""
    about = (f"Trade and technology policy as the timeline tracker knew it at {known_at}: "
             "rules, their actions with sources, corrections and retractions, and each rule's "
             "spells of unchanged state. Publishing again with the same known_at gives the "
             "same rows, so a result can be cited with this instant.")
    tables: dict[str, Any] = {}
    for name, table in TABLES.items():
        tables[name] = {"description": table["description"],
                        "columns": {c: text for c, (_, text) in table["columns"].items()}}
        if table.get("fts"):
            tables[f"{name}_fts"] = {
                "description": f"Full-text index of {name} ({', '.join(table['fts'])}); search "
                               f"it with ?_search= on the {name} table.",
                "hidden": True,
                "columns": {c: f"The {name} row's {c}, as indexed." for c in table["fts"]},
            }
    metadata: dict[str, Any] = {
        "title": "timeline: trade and technology policy",
        "description": about,
        "source": f"timeline {__version__}, as known at {known_at}",
        "license": license,
        "databases": {database: {"description": about, "source": f"known_at {known_at}",
                                 "tables": tables}},
    }
    if license_url:
        metadata["license_url"] = license_url
    return metadata


def _write_metadata(path: Path, database: str, known_at: str, license: str,
                    license_url: str | None) -> None:
    path.write_text(json.dumps(datasette_metadata(database, known_at, license, license_url),
                               ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

