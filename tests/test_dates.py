"""Dates with precision (YYYY, YYYY-MM, YYYY-MM-DD) and RFC 3339 instants."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from timeline.domain.dates import (
    DAY,
    MONTH,
    YEAR,
    InvalidDate,
    PolicyDate,
    format_instant,
    parse_day,
    parse_instant,
)


@pytest.mark.parametrize(
    "text, precision, start, end",
    [
        ("2025", YEAR, date(2025, 1, 1), date(2025, 12, 31)),
        ("2025-10", MONTH, date(2025, 10, 1), date(2025, 10, 31)),
        ("2024-02", MONTH, date(2024, 2, 1), date(2024, 2, 29)),  # leap year
        ("2025-02", MONTH, date(2025, 2, 1), date(2025, 2, 28)),
        ("2025-12-08", DAY, date(2025, 12, 8), date(2025, 12, 8)),
        ("2024-02-29", DAY, date(2024, 2, 29), date(2024, 2, 29)),
    ],
)
def test_a_date_keeps_its_precision_and_covers_its_period(text, precision, start, end):
    parsed = PolicyDate.parse(text)
    assert (parsed.text, parsed.precision) == (text, precision)
    assert (parsed.start, parsed.end) == (start, end)
    assert str(parsed) == text
    assert parsed.is_precise == (precision == DAY)
    assert parsed.contains(start) and parsed.contains(end)
    assert not parsed.contains(date.fromordinal(start.toordinal() - 1))
    if end < date.max:
        assert not parsed.contains(date.fromordinal(end.toordinal() + 1))


@pytest.mark.parametrize(
    "text",
    [
        "", "25", "20251", "2025-1", "2025-13", "2025-00", "2025-02-30", "2025-02-29",
        "2025-12-8", "2025/12/08", "2025-12-08T00:00:00Z", "0000", "0000-01", "0000-01-01",
        " 2025", "2025 ", "2025-12-08\n", "2025\n",
        "\u0662\u0660\u0662\u0665",  # Arabic-Indic digits: not the contract's YYYY
        "\uff12\uff10\uff12\uff15-\uff11\uff12",  # full-width digits
    ],
)
def test_anything_but_the_three_forms_is_refused(text):
    with pytest.raises(InvalidDate):
        PolicyDate.parse(text)


@pytest.mark.parametrize("value", [None, 2025, 2025.0, date(2025, 12, 8), ["2025"]])
def test_a_non_string_is_refused(value):
    with pytest.raises(InvalidDate):
        PolicyDate.parse(value)


def test_as_of_must_be_a_full_day():
    assert parse_day("2025-12-09") == date(2025, 12, 9)
    for text in ("2025", "2025-12", "2025-12-32", "9 December 2025"):
        with pytest.raises(InvalidDate):
            parse_day(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-12-09T00:00:00Z", datetime(2025, 12, 9, tzinfo=timezone.utc)),
        ("2025-12-09t00:00:00z", datetime(2025, 12, 9, tzinfo=timezone.utc)),
        ("2025-12-09 01:30:00+01:30", datetime(2025, 12, 9, tzinfo=timezone.utc)),
        ("2025-12-08T20:00:00-04:00", datetime(2025, 12, 9, tzinfo=timezone.utc)),
        ("2025-12-09T00:00:00.5Z", datetime(2025, 12, 9, 0, 0, 0, 500000, tzinfo=timezone.utc)),
        # Finer than microseconds: truncated, never rounded up past an instant that was asked.
        ("2025-12-09T00:00:00.123456999Z",
         datetime(2025, 12, 9, 0, 0, 0, 123456, tzinfo=timezone.utc)),
    ],
)
def test_instants_are_rfc3339_and_come_back_in_utc(text, expected):
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "text",
    [
        "2025-12-09", "2025-12-09T00:00:00", "2025-12-09T00:00Z", "2025-12-09T25:00:00Z",
        "2025-13-09T00:00:00Z", "yesterday", "", "2025-12-09T00:00:00Z\n",
        "2025-12-09T00:00:00+0100",
        # Offsets that move the instant outside years 1 to 9999.
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    ],
)
def test_instants_without_a_zone_or_malformed_are_refused(text):
    with pytest.raises(InvalidDate):
        parse_instant(text)


def test_formatted_instants_have_microseconds_in_utc_and_sort_as_text():
    instants = [
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(999, 6, 1, 12, 0, tzinfo=timezone.utc),
        datetime(2025, 12, 9, 0, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2025, 12, 9, 0, 0, 0, 10, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    texts = [format_instant(i) for i in instants]
    assert texts[2] == "2025-12-09T00:00:00.000001Z"
    assert texts[1] == "0999-06-01T12:00:00.000000Z"
    assert texts == sorted(texts)
    assert [parse_instant(t) for t in texts] == instants


@given(st.datetimes(timezones=st.sampled_from([
    timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])))
def test_an_instant_is_written_as_isoformat_writes_it_in_utc(instant: datetime) -> None:
    """RFC 3339 in UTC with microseconds: the shape isoformat gives, with Z for +00:00."""
    try:
        utc = instant.astimezone(timezone.utc)
    except OverflowError:  # an offset that moves it outside years 1 to 9999
        return
    assert format_instant(instant) == utc.isoformat(timespec="microseconds")[:26] + "Z"


def test_formatting_converts_other_zones_to_utc():
    cet = timezone(timedelta(hours=1))
    assert format_instant(datetime(2025, 12, 9, 1, 0, tzinfo=cet)) == "2025-12-09T00:00:00.000000Z"


@pytest.mark.parametrize("text", [
    "2025-12-09T00:00:00.000000Z", "0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z",
    "2024-02-29T12:30:45.123456Z", "2025-02-29T12:30:45.123456Z", "2025-13-01T00:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z", "2025-12-09T24:00:00.000000Z", "2025-12-09T23:60:00.000000Z",
    "2025-12-09T23:59:60.000000Z", "2025-12-32T00:00:00.000000Z",
])
def test_the_exported_shape_of_an_instant_reads_as_any_other(text: str) -> None:
    """Export lines hold instants as format_instant writes them, read by a shorter path: the
    same instant as written with an offset, or the same refusal."""
    def outcome(value: str) -> object:
        try:
            return parse_instant(value)
        except InvalidDate as exc:
            return str(exc).replace(value, "…")

    assert outcome(text) == outcome(text.replace("Z", "+00:00"))
