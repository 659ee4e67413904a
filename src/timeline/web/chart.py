"""The layout of a rule's chart: its states over valid time as bands, drawn as inline SVG.

Horizontal positions are percentages of the chart's width and vertical ones are pixels, so the
SVG stretches to any screen without shrinking its text. Everything here is a pure function of
the rule's state segments and two days (today and the day shown); the template draws the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable, Sequence

from timeline.domain.dates import InvalidDate, PolicyDate
from timeline.readmodel.queries import OPEN_END as END_OF_TIME
from timeline.readmodel.queries import OPEN_START as START_OF_TIME
from timeline.web.present import STATUS_LABELS, day, policy_date, precision_note, rate, short_date

# Periods narrower than this, in percent of the chart's width (two pixels on a chart 1,000
# pixels wide), cannot be told apart: neighbours as narrow are drawn as one striped band.
MIN_BAND_WIDTH = 0.2
RUN = "changing"  # the status class of such a band

# Steps between axis ticks, in months; the smallest that keeps the axis uncrowded wins.
TICK_STEPS = (1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200)
MAX_TICKS = 6


@dataclass(frozen=True)
class Band:
    """One period of constant state, drawn as a coloured band (and a rate bar, if any)."""

    x: float
    width: float
    status: str
    label: str
    rate_percent: float | None
    title: str
    href: str
    current: bool
    size: str  # "wide", "medium" or "narrow": how much label the band can carry
    short: str  # the label where a long one does not fit


@dataclass(frozen=True)
class Overlay:
    x: float
    width: float
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str

    @property
    def anchor(self) -> str:
        """Labels near an edge lean inwards, so that a narrow screen does not cut them off."""
        return "start" if self.x < 12 else "end" if self.x > 88 else "middle"


@dataclass(frozen=True)
class Marker:
    x: float
    label: str
    anchor: str  # "start" or "end": the side of the line the label sits on
    dx: int


@dataclass(frozen=True)
class Period:
    """One row of the chart's table: the same periods in words."""

    start: str
    start_note: str
    status: str
    rate_percent: float | None
    conditions: list[str]
    until: str | None
    current: bool
    scheduled: str  # why a period that starts after today is there ("The pause ends"), or ""
    href: str


@dataclass
class Chart:
    window_start: date
    window_end: date
    bands: list[Band] = field(default_factory=list)
    uncertain: list[Overlay] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    today: Marker | None = None
    as_of: Marker | None = None
    scheduled: list[Marker] = field(default_factory=list)
    future_x: float | None = None  # where the shading of days still to come begins
    periods: list[Period] = field(default_factory=list)
    max_rate: float | None = None
    statuses: list[str] = field(default_factory=list)

    # Vertical layout, in pixels.
    top: int = 36
    rate_height: int = 34
    track_height: int = 40

    @property
    def has_rates(self) -> bool:
        return self.max_rate is not None

    @property
    def track_y(self) -> int:
        return self.top + (self.rate_height + 10 if self.has_rates else 0)

    @property
    def axis_y(self) -> int:
        return self.track_y + self.track_height

    @property
    def height(self) -> int:
        return self.axis_y + 44

    def rate_bar_height(self, value: float) -> int:
        if not self.max_rate:
            return 0
        return max(3, round(value / self.max_rate * (self.rate_height - 14)))

    @property
    def has_uncertain(self) -> bool:
        return bool(self.uncertain)

    @property
    def has_runs(self) -> bool:
        """Whether some band stands for periods too short to draw apart."""
        return any(band.status == RUN for band in self.bands)


def _as_date(text: str) -> date:
    if text == START_OF_TIME:
        return date.min
    if text == END_OF_TIME:
        return date.max
    return date.fromisoformat(text)


def _window(segments: Sequence[dict[str, Any]], today: date, as_of: date) -> tuple[date, date]:
    """A span around the rule's changes, today and the day shown, with a margin either side."""
    points = {today, as_of}
    for seg in segments:
        for name in ("valid_from", "valid_to"):
            if seg[name] not in (START_OF_TIME, END_OF_TIME):
                points.add(date.fromisoformat(seg[name]))
    low, high = min(points), max(points)
    span = max((high - low).days, 365)
    margin = timedelta(days=max(span // 12, 45))
    low = max(date.min + margin, low) - margin
    high = min(date.max - margin, high) + margin
    return low, high


def _ticks(low: date, high: date, position: Callable[[date], float]) -> list[Tick]:
    months_low = low.year * 12 + low.month - 1
    months_high = high.year * 12 + high.month - 1
    span = months_high - months_low
    # Whole years past the longest step (a day picked centuries away stretches the axis).
    step = next((c for c in TICK_STEPS if span // c + 1 <= MAX_TICKS),
                math.ceil(span / (MAX_TICKS - 1) / 12) * 12)
    ticks = []
    first = months_low + 1  # the first whole month inside the window
    for m in range(first + (-first) % step, months_high + 1, step):
        when = date(m // 12, m % 12 + 1, 1)
        x = position(when)
        if not 3 <= x <= 97:  # a label centred on the very edge would be cut off
            continue
        if step >= 12:
            label = str(when.year)
        elif when.month == 1 or not ticks:
            label = f"{short_date(when.isoformat()[:7])}"
        else:
            label = short_date(when.isoformat()[:7]).split()[0]
        ticks.append(Tick(x, label))
    return ticks


def _same_period(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("status", "rate_percent", "conditions", "since", "until")
    return all(a[k] == b[k] for k in keys)


def _merge(segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join neighbouring segments that differ only in how certain they are."""
    merged: list[dict[str, Any]] = []
    for seg in segments:
        if merged and _same_period(merged[-1], seg) and merged[-1]["valid_to"] == seg["valid_from"]:
            merged[-1] = {**merged[-1], "valid_to": seg["valid_to"]}
        else:
            merged.append(dict(seg))
    return merged


def _size(width: float) -> str:
    return "wide" if width >= 30 else "medium" if width >= 12 else "narrow"


def _gathered(drawn: Sequence[tuple[Band, date, date]], low: date) -> list[Band]:
    """The bands to draw: each run of two or more neighbours too narrow to tell apart becomes
    one band over their span, linking to its first day (the periods below list them all)."""
    bands: list[Band] = []
    run: list[tuple[Band, date, date]] = []

    def close_run() -> None:
        if len(run) == 1:
            bands.append(run[0][0])
        elif run:
            first, last = run[0], run[-1]
            x = first[0].x
            width = round(last[0].x + last[0].width - x, 3)
            until = "" if last[2] == date.max else f" to {day(last[2] - timedelta(days=1))}"
            label = f"{len(run)} periods"
            bands.append(Band(
                x=x, width=width, status=RUN, label=label, rate_percent=None,
                title=f"{label}, too short to draw apart, from {day(max(first[1], low))}{until}",
                href=first[0].href, current=any(band.current for band, _, _ in run),
                size=_size(width), short=label))
        run.clear()

    for band, start, stop in drawn:
        if band.width < MIN_BAND_WIDTH:
            run.append((band, start, stop))
            continue
        close_run()
        bands.append(band)
    close_run()
    return bands


def _marker(x: float, label: str) -> Marker:
    """A label beside a vertical line, on whichever side has more room."""
    if x > 60:
        return Marker(x, label, "end", -5)
    return Marker(x, label, "start", 5)


def _start_text(period: dict[str, Any]) -> tuple[str, str]:
    """The start of a period as a reader would write it, with its precision."""
    since = period.get("since")
    if since:
        try:
            if PolicyDate.parse(since).start.isoformat() == period["valid_from"]:
                return policy_date(since), precision_note(since)
        except InvalidDate:
            pass
    return day(period["valid_from"]), ""


def _scheduled_reason(previous: dict[str, Any] | None, period: dict[str, Any]) -> str:
    if previous is not None and previous["status"] == "paused" and period["status"] != "paused":
        return "The pause ends"
    return "Scheduled"


def build_chart(
    segments: Sequence[dict[str, Any]],
    today: date,
    as_of: date,
    link: Callable[[str], str],
) -> Chart:
    """Lay out the chart of ``segments`` (from ``Tracker.state_segments``).

    ``link(day)`` gives the address of the rule's page on a day, for the bands to link to.
    """
    low, high = _window(segments, today, as_of)
    total = (high - low).days

    def position(value: date) -> float:
        clipped = min(max(value, low), high)
        return round((clipped - low).days / total * 100, 3)

    chart = Chart(window_start=low, window_end=high)
    chart.ticks = _ticks(low, high, position)

    periods = _merge(segments)
    rates = [p["rate_percent"] for p in periods if p["rate_percent"] is not None]
    chart.max_rate = max(rates) if rates else None

    previous = None
    drawn: list[tuple[Band, date, date]] = []  # each band with its period's first and end day
    for period in periods:
        start = _as_date(period["valid_from"])
        stop = _as_date(period["valid_to"])
        current = start <= as_of < stop
        starts_known = period["valid_from"] != START_OF_TIME
        start_text, start_note = _start_text(period) if starts_known else ("", "")
        scheduled = _scheduled_reason(previous, period) if starts_known and start > today else ""
        if starts_known or period["status"] != "none":
            chart.periods.append(Period(
                start=start_text, start_note=start_note, status=period["status"],
                rate_percent=period["rate_percent"], conditions=period["conditions"],
                until=period["until"], current=current, scheduled=scheduled,
                href=link(period["valid_from"]) if starts_known else link(low.isoformat()),
            ))
        previous = period

        x0, x1 = position(start), position(stop)
        if x1 <= x0:
            continue
        short = label = STATUS_LABELS.get(period["status"], period["status"])
        if period["rate_percent"] is not None:
            label += f" · {rate(period['rate_percent'])}"
        end_text = "" if stop == date.max else f" to {day(stop - timedelta(days=1))}"
        begin = f" from {start_text}" if starts_known else ""
        width = round(x1 - x0, 3)
        drawn.append((Band(
            x=x0, width=width, status=period["status"], label=label,
            rate_percent=period["rate_percent"],
            title=f"{label}{begin}{end_text}" + (" (scheduled)" if scheduled else ""),
            href=link(max(start, low).isoformat()), current=current, size=_size(width),
            short=short,
        ), start, stop))
        if period["status"] not in chart.statuses:
            chart.statuses.append(period["status"])
        if scheduled:
            since = period.get("since") or ""
            when = since if since and start_text == policy_date(since) else period["valid_from"]
            chart.scheduled.append(_marker(x0, f"{scheduled}: {short_date(when)}"))

    chart.bands = _gathered(drawn, low)

    for seg in segments:
        if seg["certain"]:
            continue
        start = _as_date(seg["valid_from"])
        stop = _as_date(seg["valid_to"])
        x0, x1 = position(start), position(stop)
        if x1 > x0:
            chart.uncertain.append(Overlay(
                x0, round(x1 - x0, 3),
                f"Uncertain from {day(start)} to {day(stop - timedelta(days=1))}: "
                "a date that decides the state is known only to the month or year",
            ))

    chart.today = _marker(position(today), "Today")
    chart.future_x = position(today + timedelta(days=1))
    chart.as_of = _marker(position(as_of), f"Shown: {short_date(as_of.isoformat())}")
    return chart
