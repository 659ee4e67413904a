"""JSON read and written by orjson where it gives what :mod:`json` gives, and by json elsewhere.

Bulk work (an import, a rebuild) reads and writes JSON for every event, so there the quicker
library shortens what a user waits for. The two differ in a few places, each handled here:
orjson reads an integer past 64 bits as a float (such text goes to json), refuses what json
accepts beyond the standard (NaN, lone surrogates: json reads those), and writes floats under
1e-4 without an exponent (the same number) and NaN as null.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Every digit as "0" and every other byte as "x": a run of 19 digits, the shortest integer
# orjson may read as a float, is then found by a plain substring search, simpler work than a
# regular expression over every line.
_DIGITS = bytes(48 if 48 <= byte <= 57 else 120 for byte in range(256))
_LONG_NUMBER = b"0" * 19

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def has_long_number(data: bytes) -> bool:
    """Whether ``data`` holds a run of 19 digits or more (in a number or not)."""
    return _LONG_NUMBER in data.translate(_DIGITS)


def loads(text: str) -> Any:
    """``json.loads(text)``: the same value, or the same :class:`json.JSONDecodeError`."""
    data: str | bytes = text
    if len(text) >= len(_LONG_NUMBER):  # shorter, it holds no long number
        data = text.encode("utf-8", "surrogatepass")
        if has_long_number(data):
            return json.loads(text)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # json says why, or reads what orjson refuses
        return json.loads(text)


def dumps(value: Any) -> str:
    """Compact JSON, as ``json.dumps`` writes it with ``ensure_ascii`` off and no spaces, but for
    floats under 1e-4 (written without an exponent) and NaN and infinities, which JSON lacks
    (null here; what is stored was validated, and holds none)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # what orjson cannot write (an integer past 64 bits, say)
        return _json_dumps(value)
