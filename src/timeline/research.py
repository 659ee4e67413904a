"""How research downloads are written: CSV cells and JSON Lines, the same for every download.

A list cell in CSV is a JSON array (``["US","CN"]``), the one form that reads back exactly;
text that a spreadsheet would run as a formula is kept as text by :mod:`timeline.spreadsheet`'s
rule, which ``timeline load`` reads back.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Iterator, Sequence

from timeline import fastjson
from timeline.spreadsheet import list_cell, protect

FORMATS = ("csv", "jsonl")
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
SUFFIXES = {"csv": "csv", "jsonl": "jsonl"}

# Rows written per chunk of a stream: large enough that a server writes few chunks, small
# enough that memory stays flat.
_ROWS_PER_CHUNK = 500


def csv_cell(value: Any) -> str:
    """One value as a CSV cell: lists as JSON arrays, booleans as true/false, None empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return protect(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return list_cell(value)  # starts with [: never a formula
    return repr(value) if isinstance(value, float) else str(value)


def csv_chunks(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """A header line, then one line per row (RFC 4180, CRLF), a few hundred rows a chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([csv_cell(row[column]) for column in columns])
        count += 1
        if count == _ROWS_PER_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            count = 0
    yield buffer.getvalue()


def jsonl_chunks(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """One compact JSON object per line, keys in column order, a few hundred rows a chunk."""
    lines: list[str] = []
    for row in rows:
        lines.append(fastjson.dumps({column: row[column] for column in columns}))
        if len(lines) == _ROWS_PER_CHUNK:
            lines.append("")
            yield "\n".join(lines)
            lines = []
    if lines:
        lines.append("")
        yield "\n".join(lines)


def chunks(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str) -> Iterator[str]:
    """``rows`` written as ``fmt`` (one of :data:`FORMATS`), a chunk of text at a time."""
    if fmt == "csv":
        return csv_chunks(rows, columns)
    if fmt == "jsonl":
        return jsonl_chunks(rows, columns)
    raise ValueError(f"unknown format {fmt!r}")
