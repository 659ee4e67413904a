"""Read-model queries for a published database: the rules as registered, a page at a time."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterator

from timeline.fastjson import loads

RULES_PAGE = 500


def iter_rules(connection: Callable[[], sqlite3.Connection], known_at: str,
               page: int = RULES_PAGE) -> Iterator[dict[str, Any]]:
    """Every rule registered at ``known_at``, in id order, with its record time.

    Read a page at a time, each page one statement (no transaction held between them, so the
    caller may ask other questions between rules); the rows at or before ``known_at`` never
    change, so the pages agree with each other.
    """
    after = ""
    while True:
        rows = connection().execute(
            "SELECT id, title, jurisdiction, instrument, targets, subjects, tags, links, "
            "registered_at FROM rules WHERE id > ? AND registered_at <= ? ORDER BY id LIMIT ?",
            (after, known_at, page),
        ).fetchall()
        for row in rows:
            yield {"id": row["id"], "title": row["title"], "jurisdiction": row["jurisdiction"],
                   "instrument": row["instrument"], "targets": loads(row["targets"]),
                   "subjects": loads(row["subjects"]), "tags": loads(row["tags"]),
                   "links": loads(row["links"]), "registered_at": row["registered_at"]}
        if len(rows) < page:
            return
        after = rows[-1]["id"]
