"""Cursors of paged answers: where the next page starts.

A listing's (the rules' states, the diff) also carries its query, with the first page's
``known_at``, so every page answers one snapshot; the timeline's is only where it stopped."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Mapping

from timeline.domain.dates import InvalidDate, parse_day, parse_instant
from timeline.domain.errors import InvalidInput, TimelineError

LIST_LIMIT = 100  # items per page unless the request says
LIST_MAX_LIMIT = 1000  # a larger limit is answered with this many


class BadCursor(TimelineError):
    """A cursor this server did not give, or given with parameters of another query."""


def _bad(detail: str) -> BadCursor:
    return BadCursor(detail, {"cursor": "is not a cursor this server gave"})


@dataclass(frozen=True)
class ListCursor:
    """The query of a listing (its days, filters and settled ``known_at``) and the last rule id
    of the page before."""

    query: Mapping[str, Any]
    after: str

    def encode(self) -> str:
        text = json.dumps({"query": dict(self.query), "after": self.after}, separators=(",", ":"),
                          sort_keys=True)
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "ListCursor":
        try:
            raw = base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())
            value = json.loads(raw)
        except (ValueError, binascii.Error):
            raise _bad("The cursor is not one this server gave.") from None
        if not (isinstance(value, dict) and set(value) == {"query", "after"}
                and isinstance(value["after"], str) and isinstance(value["query"], dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value["query"].items())):
            raise _bad("The cursor is not one this server gave.")
        query = value["query"]
        try:
            parse_instant(query["known_at"])
            for name in ("as_of", "from", "to"):
                if name in query:
                    parse_day(query[name])
        except (KeyError, InvalidDate):
            raise _bad("The cursor is not one this server gave.") from None
        return cls(query, value["after"])

    def query_for(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The cursor's query, checked against the parameters a request gives beside it: those it
        leaves out are the first page's, and any it gives must be the same (400 otherwise).
        ``given`` names every parameter of the listing, None for those the request left out."""
        query = dict(self.query)
        days = {"as_of"} if "as_of" in given else {"from", "to"}
        if not days <= set(query) or not set(query) <= set(given):
            raise _bad("The cursor belongs to another listing.")
        for name, value in given.items():
            if value is None:
                continue
            if name == "known_at":
                same = parse_instant(query["known_at"]) == value
            else:
                same = query.get(name) == (value.isoformat() if hasattr(value, "isoformat") else value)
            if not same:
                raise BadCursor(
                    f"The cursor belongs to another query: {name} differs from the first page's.",
                    {"cursor": f"belongs to a query with another {name}"})
        return query


def encode_timeline_cursor(effective_start: str, position: int) -> str:
    """The timeline's cursor after the action starting on ``effective_start`` at ``position``."""
    text = json.dumps([effective_start, position])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_timeline_cursor(cursor: str) -> tuple[str, int]:
    """The effective start and position a timeline cursor stopped at."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not (isinstance(values, list) and len(values) == 2
                and isinstance(values[0], str) and isinstance(values[1], int)):
            raise ValueError
        return values[0], values[1]
    except ValueError:
        raise InvalidInput("The cursor is not one this server gave.",
                           {"cursor": "is not valid"}) from None
