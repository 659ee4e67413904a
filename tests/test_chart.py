"""The chart's layout and the pages' wording of dates: pure functions, no I/O."""

from __future__ import annotations

from datetime import date

import pytest

from timeline.web.chart import build_chart
from timeline.web.present import describe_value, group_sources, jurisdiction_name, one_line, policy_date


def seg(valid_from: str, valid_to: str, status: str, rate: float | None = None, certain: bool = True,
        since: str | None = None, until: str | None = None) -> dict:
    return {"valid_from": valid_from, "valid_to": valid_to, "status": status, "rate_percent": rate,
            "conditions": [], "since": since, "until": until, "certain": certain,
            "uncertain_because": [] if certain else ["x"], "based_on": []}


H200 = [
    seg("0001-01-01", "2022-01-01", "none"),
    seg("2022-01-01", "2023-01-01", "restricted", certain=False, since="2022"),
    seg("2023-01-01", "2025-12-08", "restricted", since="2022"),
    seg("2025-12-08", "9999-12-31", "eased", rate=25.0, since="2025-12-08"),
]


def link(day: str) -> str:
    return f"/rules/r?as_of={day}"


@pytest.mark.parametrize("text, shown", [
    ("2025-12-08", "8 December 2025"), ("2025-10", "October 2025"), ("2025", "2025"),
    ("2025-01-01", "1 January 2025"), ("", ""),
])
def test_dates_are_shown_with_their_precision(text: str, shown: str) -> None:
    assert policy_date(text) == shown


def test_words_for_codes_and_values() -> None:
    assert jurisdiction_name("US") == "United States"
    assert jurisdiction_name("KR") == "South Korea"
    assert jurisdiction_name("EU") == "European Union"
    assert describe_value("rate_percent", 25.0) == "25%"
    assert describe_value("effective", "2025-10") == "October 2025"
    assert describe_value("until", None) == "(none)"
    assert one_line("First sentence. Second one.") == "First sentence."
    assert one_line("word " * 100).endswith("…") and len(one_line("word " * 100)) <= 221


def test_sources_from_one_document_are_grouped() -> None:
    grouped = group_sources([{"title": "A", "quote": "one"}, {"title": "B"}, {"title": "A", "quote": "two"}])
    assert [(g["title"], g["quotes"]) for g in grouped] == [("A", ["one", "two"]), ("B", [])]


def test_sentinel_years_are_clipped_to_a_window_around_the_changes_and_today() -> None:
    chart = build_chart(H200, today=date(2026, 3, 1), as_of=date(2025, 12, 9), link=link)
    assert date(2021, 1, 1) <= chart.window_start < date(2022, 1, 1)
    assert date(2026, 3, 1) < chart.window_end <= date(2027, 3, 1)
    assert [b.status for b in chart.bands] == ["none", "restricted", "eased"]
    assert chart.bands[0].x == 0
    for before, after in zip(chart.bands, chart.bands[1:]):
        assert before.x + before.width == pytest.approx(after.x, abs=0.01)
    assert sum(b.width for b in chart.bands) == pytest.approx(100, abs=0.01)


def test_the_band_of_the_day_shown_is_current_and_links_keep_to_the_rule() -> None:
    chart = build_chart(H200, today=date(2026, 3, 1), as_of=date(2025, 12, 7), link=link)
    assert [b.status for b in chart.bands if b.current] == ["restricted"]
    assert chart.bands[1].href == "/rules/r?as_of=2022-01-01"
    assert chart.bands[1].label == "Restricted" and chart.bands[2].label == "Eased · 25%"
    assert chart.as_of.label == "Shown: 7 Dec 2025"
    chart = build_chart(H200, today=date(2026, 3, 1), as_of=date(2025, 12, 8), link=link)
    assert [b.status for b in chart.bands if b.current] == ["eased"]


def test_imprecise_dates_are_hatched_and_periods_keep_their_precision() -> None:
    chart = build_chart(H200, today=date(2026, 3, 1), as_of=date(2025, 12, 9), link=link)
    assert len(chart.uncertain) == 1 and chart.uncertain[0].x == chart.bands[1].x
    assert [(p.start, p.start_note, p.status) for p in chart.periods] == [
        ("2022", "known only to the year", "restricted"),
        ("8 December 2025", "", "eased"),
    ]


def test_rates_scale_to_the_highest() -> None:
    tariff = [seg("0001-01-01", "2025-01-01", "none"),
              seg("2025-01-01", "2025-10-01", "in_force", rate=20.0, since="2025"),
              seg("2025-10-01", "9999-12-31", "in_force", rate=10.0, since="2025")]
    chart = build_chart(tariff, today=date(2026, 1, 1), as_of=date(2025, 6, 1), link=link)
    assert chart.max_rate == 20.0
    assert chart.rate_bar_height(20.0) == 2 * chart.rate_bar_height(10.0)


def test_future_changes_are_marked_as_scheduled() -> None:
    paused = [seg("0001-01-01", "2024-03-01", "none"),
              seg("2024-03-01", "2025-06-01", "restricted", since="2024-03-01"),
              seg("2025-06-01", "2028-01-01", "paused", since="2025-06-01", until="2028-01"),
              seg("2028-01-01", "9999-12-31", "restricted", since="2028-01")]
    chart = build_chart(paused, today=date(2026, 3, 1), as_of=date(2026, 3, 1), link=link)
    assert [m.label for m in chart.scheduled] == ["The pause ends: Jan 2028"]
    assert chart.window_end > date(2028, 1, 1)
    assert chart.future_x is not None and chart.future_x < chart.scheduled[0].x
    assert [p.scheduled for p in chart.periods] == ["", "", "The pause ends"]


def test_axis_ticks_stay_few_and_inside_the_chart() -> None:
    long = [seg("0001-01-01", "1990-01-01", "none"), seg("1990-01-01", "9999-12-31", "banned", since="1990")]
    chart = build_chart(long, today=date(2026, 3, 1), as_of=date(2026, 3, 1), link=link)
    assert 2 <= len(chart.ticks) <= 6
    assert all(3 <= t.x <= 97 for t in chart.ticks)
    assert all(t.label.isdigit() for t in chart.ticks)


@pytest.mark.parametrize("as_of", [date(1, 1, 1), date(9999, 12, 31), date(1900, 6, 1)])
def test_a_day_far_away_still_gives_a_readable_axis(as_of: date) -> None:
    chart = build_chart(H200, today=date(2026, 3, 1), as_of=as_of, link=link)
    assert 1 <= len(chart.ticks) <= 6
    assert chart.window_start <= as_of <= chart.window_end
    assert sum(b.width for b in chart.bands) == pytest.approx(100, abs=0.01)


def test_a_rule_with_no_action_has_one_band_and_no_periods() -> None:
    chart = build_chart([seg("0001-01-01", "9999-12-31", "none")], today=date(2026, 3, 1),
                        as_of=date(2026, 3, 1), link=link)
    assert [b.status for b in chart.bands] == ["none"] and chart.periods == []
    assert chart.window_start < date(2026, 3, 1) < chart.window_end


def test_periods_too_short_to_draw_apart_are_one_striped_band_and_all_still_listed() -> None:
    """A rule that changed every day for a year, years apart from its other changes: the days
    are one band over their span, linking to its first day; a lone short period stays itself."""
    from datetime import timedelta

    days = [date(2005, 1, 1) + timedelta(days=n) for n in range(366)]
    statuses = ("restricted", "banned", "eased")
    segments = [seg("0001-01-01", "1995-01-01", "none"),
                seg("1995-01-01", "2005-01-01", "restricted", since="1995")]
    segments += [seg(d.isoformat(), (d + timedelta(days=1)).isoformat(), statuses[i % 3],
                     since=d.isoformat()) for i, d in enumerate(days[:-1])]
    segments += [seg("2006-01-01", "2015-01-01", "banned", since="2006-01-01"),
                 seg("2015-01-01", "2015-01-02", "eased", since="2015-01-01"),
                 seg("2015-01-02", "9999-12-31", "banned", since="2015-01-02")]
    chart = build_chart(segments, today=date(2026, 3, 1), as_of=date(2005, 6, 1), link=link)
    assert [b.status for b in chart.bands] == [
        "none", "restricted", "changing", "banned", "eased", "banned"]
    run = chart.bands[2]
    assert run.label == "365 periods" and run.current and chart.has_runs
    assert run.title == "365 periods, too short to draw apart, from 1 January 2005 to 31 December 2005"
    assert run.href == "/rules/r?as_of=2005-01-01"
    assert sum(b.width for b in chart.bands) == pytest.approx(100, abs=0.01)
    assert len(chart.periods) == 1 + 365 + 3  # every period is still in the list
