"""CSV files of rules or of actions, as a spreadsheet saves them, read into fixture shapes.

One row each; columns named as the API's fields, plus ``rule`` for actions. An empty cell is a
field not given. A list cell is a JSON array (``["US","CN"]``) or one plain value; one source
may be given as ``source_title``, ``source_url``, ``source_publisher``, ``source_published`` and
``source_quote`` instead of a ``sources`` JSON array. Rows are checked with the API's own
schemas, and every problem names the file, the row (counted as a spreadsheet shows it, the
header being row 1) and the column.

A file is told by its header: a ``kind`` column makes it a file of actions, a ``rule_id``
column with ``valid_from`` or ``period`` a spells or panel download (read for its rules: a
rule's state follows from its actions, so those columns are read past), else a ``title``
column a file of rules. The columns that downloads and exports add to actions (``rule_id``,
``recorded_at``, ``position``, ``rule_title`` and the like) are read as those exports mean them,
so an exported and edited file comes back in.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from marshmallow import ValidationError

from timeline.domain.errors import TimelineError
from timeline.schemas import FileActionSchema, FixtureRuleSchema, errors_by_field
from timeline.spreadsheet import unprotect

RULE_COLUMNS = ("id", "title", "jurisdiction", "instrument", "targets", "subjects", "tags", "links")
RULE_LISTS = ("targets", "subjects", "tags")
ACTION_COLUMNS = ("rule", "id", "kind", "effective", "announced", "rate_percent", "until",
                  "conditions", "summary", "sources")
SOURCE_COLUMNS = ("source_title", "source_url", "source_publisher", "source_published",
                  "source_quote")
# What the timeline and history downloads add to an action: facts of the record, not fields a
# client gives, so they are read past (``rule_id`` names the rule; ``retracted`` is checked).
EXPORTED_COLUMNS = ("rule_id", "rule_title", "jurisdiction", "instrument", "targets",
                    "recorded_at", "position", "corrected", "original", "corrections",
                    "retraction", "retracted", "known_at")
# What the spells and panel downloads add to a rule's columns: its state over time.
STATE_COLUMNS = ("status", "rate_percent", "conditions", "valid_from", "valid_to", "period",
                 "changed", "certain", "uncertain_because", "based_on", "known_at")
TRUE_CELLS = ("true", "1", "yes")
TRIMMED = frozenset({"id", "rule", "rule_id", "kind", "effective", "announced", "until",
                     "rate_percent", "jurisdiction", "instrument", "targets", "tags", "links",
                     "sources", "source_url", "source_published", "retracted"})


class CsvError(TimelineError):
    """A CSV file that cannot be loaded; the message names the file, the row and the column."""


@dataclass
class ActionRow:
    """One row of an actions file: the action, its rule, and where it was read."""

    rule_id: str
    action: dict[str, Any]
    where: str  # "actions.csv, row 14"
    retracted: bool = False  # marked retracted by the export it came from


@dataclass
class CsvFixture:
    rules: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (rule, where)
    actions: list[ActionRow] = field(default_factory=list)
    # The rule fields the file gives, when it gives only some (a spells or panel download):
    # the others are the registered rule's.
    rule_fields: tuple[str, ...] | None = None


def read_csv_fixture(path: Path) -> CsvFixture:
    """Read and check one CSV file of rules or of actions; raises :class:`CsvError`."""
    header, rows = _rows(path)
    if "kind" in header:
        _unknown(path, header, ACTION_COLUMNS + SOURCE_COLUMNS + EXPORTED_COLUMNS, "an actions file")
        if "rule" not in header and "rule_id" not in header:
            raise CsvError(f"{path}, row 1: an actions file needs a rule column naming each "
                           "action's rule.")
        return CsvFixture(actions=[_action(path, header, number, cells) for number, cells in rows])
    if "rule_id" in header and ("valid_from" in header or "period" in header):
        _unknown(path, header, ("rule_id",) + RULE_COLUMNS[1:] + STATE_COLUMNS,
                 "a spells or panel file")
        given = tuple(name for name in RULE_COLUMNS[1:] if name in header)
        return CsvFixture(rules=_rules_of_states(path, header, rows), rule_fields=("id", *given))
    if "title" in header:
        _unknown(path, header, RULE_COLUMNS, "a rules file")
        return CsvFixture(rules=[_rule(path, header, number, cells) for number, cells in rows])
    raise CsvError(f"{path}: is neither a CSV of actions (it would have a kind column) nor one "
                   f"of rules (a title column); its columns are {', '.join(header) or 'none'}.")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the rows that hold anything, each with its spreadsheet row number."""
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte order mark first.
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, strict=True)
            try:
                records = list(reader)
            except csv.Error as exc:
                raise CsvError(f"{path}, line {reader.line_num}: is not readable as CSV "
                               f"({exc}).") from None
    except UnicodeDecodeError:
        raise CsvError(f"{path}: is not UTF-8 text (save it as \"CSV UTF-8\").") from None
    except OSError as exc:
        raise CsvError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if not records:
        raise CsvError(f"{path}: is empty; a CSV fixture starts with a header row.")
    header = [name.strip() for name in records[0]]
    # Spreadsheets may save empty columns after the last one used.
    while header and not header[-1]:
        header.pop()
    for index, name in enumerate(header):
        if not name:
            raise CsvError(f"{path}, row 1, column {index + 1}: the header cell is empty.")
        if header.index(name) != index:
            raise CsvError(f"{path}, row 1, column {name}: appears more than once.")
    rows = []
    for number, cells in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if any(cell.strip() for cell in cells[len(header):]):
            raise CsvError(f"{path}, row {number}: has more cells than the header has columns.")
        rows.append((number, (cells + [""] * len(header))[:len(header)]))
    if not rows:
        raise CsvError(f"{path}: has a header but no rows.")
    return header, rows


def _unknown(path: Path, header: list[str], known: tuple[str, ...], what: str) -> None:
    for name in header:
        if name not in known:
            raise CsvError(f"{path}, row 1, column {name}: is not a column of {what} "
                           f"(the columns are {', '.join(known)}).")


def _list(text: str) -> list[Any]:
    """A list cell: a JSON array, or one plain value."""
    if not text.startswith("["):
        return [text]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError('must be a JSON array (["a","b"]) or one plain value not starting '
                         "with [") from None
    if not isinstance(value, list):
        raise ValueError('must be a JSON array (["a","b"]) or one plain value')
    return value


def _objects(text: str) -> list[Any]:
    """A cell of objects (links, sources): a JSON array of them, or one object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON array of objects") from None
    return value if isinstance(value, list) else [value]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a number")
    return value


def _cells(path: Path, number: int, header: list[str], cells: list[str],
           readers: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The row's given cells by column, each read as its column says (text by default)."""
    values: dict[str, Any] = {}
    for name, cell in zip(header, cells):
        if not cell.strip():
            continue  # empty: not given
        # Spaces around a code, a date or a number are a spreadsheet's slip; text is kept as
        # written, so that it reads back exactly.
        text = unprotect(cell.strip() if name in TRIMMED else cell)
        try:
            values[name] = readers.get(name, str)(text)
        except ValueError as exc:
            raise CsvError(f"{path}, row {number}, column {name}: {exc}.",
                           {name: str(exc)}) from None
    return values


def _checked(schema: Any, data: dict[str, Any], where: str,
             column_of: Callable[[str], str]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        problems = errors_by_field(exc.messages)
        name, message = next(iter(problems.items()))
        column = column_of(name)
        raise CsvError(f"{where}, column {column}: {message}",
                       {column_of(k): v for k, v in problems.items()}) from None


def _rule(path: Path, header: list[str], number: int, cells: list[str],
          id_column: str = "id") -> tuple[dict, str]:
    readers: dict[str, Callable[[str], Any]] = dict.fromkeys(RULE_LISTS, _list)
    readers["links"] = _objects
    data = _cells(path, number, header, cells, readers)
    data = {("id" if name == id_column else name): value for name, value in data.items()
            if name == id_column or name in RULE_COLUMNS[1:]}
    where = f"{path}, row {number}"
    rule = _checked(FixtureRuleSchema(), data, where,
                    lambda name: id_column if name == "id" else name.split(".")[0])
    return rule, where


def _rules_of_states(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
                     ) -> list[tuple[dict, str]]:
    """The rules of a spells or panel download: one per rule id, its rows agreeing."""
    found: dict[str, tuple[dict, str]] = {}
    for number, cells in rows:
        rule, where = _rule(path, header, number, cells, id_column="rule_id")
        first = found.setdefault(rule["id"], (rule, where))
        if first[0] != rule:
            raise CsvError(f"{where}: rule {rule['id']!r} is not as in {first[1]}; every row of "
                           "a rule gives the same rule fields.", {"rule_id": "rows disagree"})
    return list(found.values())


def _action(path: Path, header: list[str], number: int, cells: list[str]) -> ActionRow:
    readers: dict[str, Callable[[str], Any]] = {
        "rate_percent": _number, "conditions": _list, "sources": _objects}
    values = _cells(path, number, header, cells, readers)
    where = f"{path}, row {number}"
    rule_column = "rule" if "rule" in header else "rule_id"
    rule_id = values.get("rule") or values.get("rule_id")
    if not rule_id:
        raise CsvError(f"{where}, column {rule_column}: the action's rule is missing.",
                       {rule_column: "is required"})
    if "rule" in values and "rule_id" in values and values["rule"] != values["rule_id"]:
        raise CsvError(f"{where}, column rule: names {values['rule']!r} but rule_id names "
                       f"{values['rule_id']!r}.", {"rule": "differs from rule_id"})
    action = {name: values[name] for name in ACTION_COLUMNS if name in values and name != "rule"}
    source = {name.removeprefix("source_"): values[name] for name in SOURCE_COLUMNS if name in values}
    if source:
        if "sources" in action:
            raise CsvError(f"{where}, column sources: give the sources as a JSON array or one "
                           "source in the source_ columns, not both.",
                           {"sources": "given twice"})
        action["sources"] = [source]
    if "sources" not in action:
        raise CsvError(f"{where}, column source_title: an action needs a source (source_title, "
                       "or sources as a JSON array).", {"source_title": "is required"})

    def column_of(name: str) -> str:
        head, _, rest = name.partition(".")
        if head == "sources" and source:
            last = rest.split(".")[-1]
            return f"source_{last}" if f"source_{last}" in SOURCE_COLUMNS else "source_title"
        return head

    checked = _checked(FileActionSchema(), action, where, column_of)
    retracted = str(values.get("retracted", "")).lower() in TRUE_CELLS
    return ActionRow(rule_id=rule_id, action=checked, where=where, retracted=retracted)
