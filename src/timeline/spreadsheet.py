"""The one rule for text cells that spreadsheets open: written protected, read back exactly.

A spreadsheet runs a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula (OWASP's "CSV injection"), so downloads write such text with a leading ``'``, which
spreadsheets show as text. :func:`protect` writes a cell, :func:`unprotect` reads one back, and
the pair round-trips every string exactly: text that already starts with quotes before such a
character gets one more, so a ``'`` the text itself began with is never taken for the guard.
"""

from __future__ import annotations

import re
from typing import Any

from timeline import fastjson

# A cell that a spreadsheet would run, behind any number of quotes (the quotes a guard added).
_GUARDED = re.compile(r"'*[=+\-@\t\r]")


def protect(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet keeps as text."""
    return "'" + text if _GUARDED.match(text) else text


def unprotect(cell: str) -> str:
    """The text a cell written by :func:`protect` holds (any other cell as it is)."""
    return cell[1:] if cell[:1] == "'" and _GUARDED.match(cell, 1) else cell


def list_cell(values: list[Any]) -> str:
    """A list as a CSV cell: a JSON array, the one form that reads back exactly."""
    return fastjson.dumps(values)
