"""Words and dates as a reader sees them on the pages: labels, names and dates with precision."""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Any

import pycountry

from timeline.domain.dates import DAY, MONTH, InvalidDate, PolicyDate, parse_instant

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")

STATUS_LABELS = {
    "none": "No measure",
    "proposed": "Proposed",
    "restricted": "Restricted",
    "banned": "Banned",
    "eased": "Eased",
    "in_force": "In force",
    "paused": "Paused",
    "lifted": "Lifted",
}
# The order a reader scans a day's rules in: the hardest measures first.
STATUS_ORDER = ("banned", "restricted", "in_force", "paused", "eased", "proposed", "lifted", "none")

KIND_LABELS = {
    "ban": "Ban",
    "restrict": "Restriction",
    "ease": "Easing",
    "fee": "Fee",
    "pause": "Pause",
    "resume": "Resumption",
    "lift": "Lifted",
    "propose": "Proposal",
}

INSTRUMENT_LABELS = {
    "export_control": "Export control",
    "import_tariff": "Import tariff",
    "purchase_restriction": "Purchase restriction",
    "investment_restriction": "Investment restriction",
    "sanction": "Sanction",
    "legislation": "Legislation",
    "trade_commitment": "Trade commitment",
    "other": "Other",
}

# How a link reads from the rule that names it, and from the rule it names.
RELATION_LABELS = {
    "amends": ("Amends", "Amended by"),
    "blocks": ("Would block", "Could be blocked by"),
    "retaliates_against": ("Retaliates against", "Retaliated against by"),
    "replaces": ("Replaces", "Replaced by"),
    "related": ("Related", "Related"),
}

FIELD_LABELS = {
    "effective": "Effective",
    "announced": "Announced",
    "rate_percent": "Rate",
    "until": "Until",
    "conditions": "Conditions",
    "summary": "Summary",
    "sources": "Sources",
}


def policy_date(text: str | date | None) -> str:
    """``2025-12-08`` as "8 December 2025", ``2025-10`` as "October 2025", ``2025`` as "2025"."""
    if isinstance(text, date):
        return day(text)
    if not text:
        return ""
    try:
        parsed = PolicyDate.parse(text)
    except InvalidDate:
        return text
    if parsed.precision == DAY:
        return day(parsed.start)
    if parsed.precision == MONTH:
        return f"{MONTHS[parsed.start.month - 1]} {parsed.start.year}"
    return str(parsed.start.year)


def short_date(text: str | date | None) -> str:
    """The same with abbreviated months, for tight spots: "8 Dec 2025", "Oct 2025", "2025"."""
    full = policy_date(text)
    for month in MONTHS:
        full = full.replace(month, month[:3])
    return full


def day(value: date | str) -> str:
    """A full day: "8 December 2025"."""
    if isinstance(value, str):
        value = date.fromisoformat(value)
    return f"{value.day} {MONTHS[value.month - 1]} {value.year}"


def precision_note(text: str | None) -> str:
    """Why a date is vague, in words; empty for a full day."""
    if not text:
        return ""
    try:
        parsed = PolicyDate.parse(text)
    except InvalidDate:
        return ""
    if parsed.precision == MONTH:
        return "known only to the month"
    if parsed.precision != DAY:
        return "known only to the year"
    return ""


def instant(text: str | None) -> str:
    """A record time as "29 November 2026, 01:16 UTC"."""
    if not text:
        return ""
    try:
        value = parse_instant(text)
    except InvalidDate:
        return text
    return f"{day(value.date())}, {value:%H:%M} UTC"


def rate(value: float | None) -> str:
    return "" if value is None else f"{value:g}%"


@lru_cache(maxsize=512)
def jurisdiction_name(code: str) -> str:
    """The plain name of an ISO 3166-1 alpha-2 code (or EU), falling back to the code."""
    if code == "EU":
        return "European Union"
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    return getattr(country, "common_name", None) or country.name


def one_line(text: str | None, limit: int = 220) -> str:
    """The first sentence of a summary, cut at a word if it is still long."""
    text = " ".join((text or "").split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    first = match.group(1) if match else text
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def describe_value(field: str, value: Any) -> str:
    """A corrected field's value as one line of text."""
    if value is None or value == [] or value == "":
        return "(none)"
    if field in ("effective", "announced", "until"):
        return policy_date(value)
    if field == "rate_percent":
        return rate(value)
    if field == "conditions":
        return "; ".join(value)
    if field == "sources":
        return "; ".join(source.get("title", "") for source in value)
    return str(value)


def group_sources(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sources that name the same document, merged: one title with each of their quotes."""
    groups: dict[tuple, dict[str, Any]] = {}
    for source in sources:
        key = tuple(source.get(name) for name in ("title", "url", "publisher", "published"))
        group = groups.setdefault(key, {**{k: v for k, v in source.items() if k != "quote"}, "quotes": []})
        if source.get("quote"):
            group["quotes"].append(source["quote"])
    return list(groups.values())


def register(app: Any) -> None:
    """Make the helpers available to every template as filters and globals."""
    app.jinja_env.filters.update(
        policy_date=policy_date, short_date=short_date, day=day, instant=instant, rate=rate,
        jurisdiction=jurisdiction_name, one_line=one_line, precision_note=precision_note,
        status_label=lambda s: STATUS_LABELS.get(s, s), kind_label=lambda k: KIND_LABELS.get(k, k),
        instrument_label=lambda i: INSTRUMENT_LABELS.get(i, i),
        field_label=lambda f: FIELD_LABELS.get(f, f), describe_value=describe_value,
        group_sources=group_sources,
    )
