"""The Data page: every download for the shown filters, each pinned to one vintage (known_at)."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, render_template, request

from timeline.domain.dates import parse_instant
from timeline.schemas import RULE_ID
from timeline.web.pages import BadQuery, _day, _filter_choices, _filters, _known_at, _text, _today

bp = Blueprint("data", __name__)

PANEL_PERIODS = (("month", "Monthly"), ("quarter", "Quarterly"), ("year", "Yearly"))
FORMATS = (("csv", "CSV"), ("jsonl", "JSON Lines"))


def _rule() -> str | None:
    text = _text("rule")
    if text and RULE_ID.fullmatch(text) is None:
        raise BadQuery(f"rule: {text!r} is not a rule id.", {"rule": "is not a rule id"})
    return text or None


def _link(path: str, **params: Any) -> str:
    """``path`` with the parameters that say something, in the order given."""
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(given)}" if given else path


@bp.get("/data")
def page() -> str:
    """Downloads of spells, panels, the state on a day and the events, for one vintage."""
    from timeline.web import current_tracker

    filters = {**_filters(), "rule": _rule()}
    today = _today()
    day_from = _day("from") or date(today.year - 4, 1, 1)
    day_to = _day("to") or today
    if day_from > day_to:
        raise BadQuery("from: must not be after to.", {"from": "must not be after to"})
    as_of = _day("as_of") or today
    # The instant the page shows: every link carries it, so each answers the same rows forever.
    known_at = current_tracker().known_at(_known_at())
    vintage = {"known_at": known_at}
    spells = [(label, _link("/api/v1/spells", **filters, format=fmt, **vintage))
              for fmt, label in FORMATS]
    panels = [
        {"every": every, "label": label, "links": [
            (text, _link("/api/v1/panel", **{"from": day_from.isoformat(), "to": day_to.isoformat()},
                         every=every, **filters, format=fmt, **vintage))
            for fmt, text in FORMATS]}
        for every, label in PANEL_PERIODS
    ]
    state_filters = {k: filters[k] for k in ("jurisdiction", "instrument", "q")}
    state_csv = _link("/state.csv", as_of=as_of.isoformat(), **state_filters, **vintage)
    events = _link("/api/v1/events", after=0, limit=1000, rule=filters["rule"],
                   jurisdiction=filters["jurisdiction"], instrument=filters["instrument"])
    stamp = known_at[:10]
    return render_template(
        "data.html",
        args=filters,
        known_at=known_at,
        requested_known_at=_text("known_at"),
        day_from=day_from,
        day_to=day_to,
        as_of=as_of,
        choices=_filter_choices(parse_instant(known_at)),
        spells=spells,
        panels=panels,
        state_csv=state_csv,
        events=events,
        base=request.host_url.rstrip("/"),
        spells_csv=spells[0][1],
        database=f"timeline-{stamp}.db",
        metadata=f"timeline-{stamp}.metadata.json",
        permalink=_link("/data", **filters, **{"from": _text("from"), "to": _text("to")},
                        as_of=_text("as_of"), **vintage),
    )
