"""Dates with precision: the EDTF level 0 forms ``YYYY``, ``YYYY-MM`` and ``YYYY-MM-DD``."""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

# ASCII digits only, and the whole string: ``$`` alone would let a trailing newline through.
_PATTERN = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")

YEAR, MONTH, DAY = "year", "month", "day"


class InvalidDate(ValueError):
    """A string that is not a real ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` date."""


@dataclass(frozen=True, order=False, slots=True)
class PolicyDate:
    """A date as reported: a whole year, a month or a day, covering a period of days."""

    text: str
    precision: str
    start: date
    end: date  # last day of the period, inclusive

    @staticmethod
    def parse(text: str) -> PolicyDate:
        if not isinstance(text, str):
            raise InvalidDate("must be a date string: YYYY, YYYY-MM or YYYY-MM-DD")
        return _parse(text)

    @property
    def is_precise(self) -> bool:
        return self.precision == DAY

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def __str__(self) -> str:
        return self.text


# PolicyDate is immutable: one parse of each text serves every action that has it (the same
# few thousand dates come back for every event projected).
@functools.lru_cache(maxsize=1 << 16)
def _parse(text: str) -> PolicyDate:
    match = _PATTERN.fullmatch(text)
    if not match:
        raise InvalidDate(f"{text!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = match.groups()
    try:
        if day is not None:
            start = date(int(year), int(month), int(day))
            return PolicyDate(text, DAY, start, start)
        if month is not None:
            m = int(month)
            last = calendar.monthrange(int(year), m)[1]
            return PolicyDate(text, MONTH, date(int(year), m, 1), date(int(year), m, last))
        y = int(year)
        if y < 1:
            raise ValueError("year 0 does not exist")
        return PolicyDate(text, YEAR, date(y, 1, 1), date(y, 12, 31))
    except ValueError:
        raise InvalidDate(f"{text!r} is not a real date") from None


def parse_day(text: str) -> date:
    """A full ``YYYY-MM-DD`` day, as ``as_of`` needs."""
    parsed = PolicyDate.parse(text)
    if parsed.precision != DAY:
        raise InvalidDate(f"{text!r} is not a full day (YYYY-MM-DD)")
    return parsed.start


_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_instant(text: str) -> datetime:
    """An RFC 3339 instant (with a zone), as a UTC datetime."""
    if not isinstance(text, str) or not _INSTANT.fullmatch(text):
        raise InvalidDate(f"{text!r} is not an RFC 3339 instant such as 2025-12-09T00:00:00Z")
    if len(text) == 27 and text[10] == "T" and text[26] == "Z":
        # The shape this project writes (format_instant), in every export line: UTC, with
        # microseconds, and so a real instant in years 1 to 9999 if its fields are.
        try:
            return datetime.fromisoformat(text[:26]).replace(tzinfo=timezone.utc)
        except ValueError:
            raise InvalidDate(f"{text!r} is not a real instant") from None
    cleaned = text.replace("z", "Z").replace("Z", "+00:00").replace("t", "T").replace(" ", "T")
    fraction = re.search(r"\.(\d+)", cleaned)
    if fraction and len(fraction.group(1)) > 6:
        # Python keeps microseconds: finer digits are truncated, never rounded up.
        cleaned = cleaned.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        return datetime.fromisoformat(cleaned).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        # OverflowError: an offset that moves the instant outside years 1 to 9999
        raise InvalidDate(f"{text!r} is not a real instant") from None


# A day as date.isoformat writes it (four-digit years), cached: isoformat formats through C's
# printf, and the same few thousand days come back for every event projected.
day_text = functools.lru_cache(maxsize=1 << 16)(date.isoformat)

def format_instant(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: sorts as text in time order."""
    # isoformat, not strftime: its %Y drops the leading zeros of years before 1000 on some
    # platforms.
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(
        timespec="microseconds") + "Z"
