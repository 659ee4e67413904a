"""Instants at the edges of the calendar: formatted so they sort as text, refused when unreal."""

from datetime import datetime, timezone

import pytest

from timeline.domain.dates import InvalidDate, format_instant, parse_instant


def test_years_before_1000_keep_four_digits():
    instant = datetime(58, 9, 3, 12, 42, 2, tzinfo=timezone.utc)
    assert format_instant(instant) == "0058-09-03T12:42:02.000000Z"
    assert parse_instant(format_instant(instant)) == instant
    assert format_instant(instant) < format_instant(datetime(2025, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_offset_past_the_calendar_is_invalid(text):
    with pytest.raises(InvalidDate):
        parse_instant(text)
