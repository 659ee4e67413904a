"""The web pages: server-rendered HTML, readable without JavaScript. Data only through the Tracker."""

from __future__ import annotations

import bisect
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Iterator
from urllib.parse import urlencode

from flask import (Blueprint, Flask, Response, current_app, render_template, request,
                   stream_with_context, url_for)

from timeline import research
from timeline.domain.dates import InvalidDate, PolicyDate, YEAR, parse_day, parse_instant
from timeline.domain.errors import InvalidInput, NotFound, TimelineError
from timeline.domain.kinds import KINDS
from timeline.schemas import INSTRUMENTS, JURISDICTIONS, RULE_ID
from timeline.web import current_tracker, present
from timeline.web.chart import build_chart

bp = Blueprint("pages", __name__)

TIMELINE_PAGE_SIZE = 25  # actions on one page of the timeline; the TIMELINE_PAGE_SIZE setting overrides it
MAX_QUERY = 200

# Nothing but the app's own files: no inline script or style, no outside request, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


class BadQuery(TimelineError):
    """A query parameter a page cannot use; the page answers 400 and names it."""


def _today() -> date:
    return datetime.now(timezone.utc).date()


# Reading query parameters ---------------------------------------------------------------------


def _text(name: str) -> str:
    return request.args.get(name, "").strip()


def _day(name: str) -> date | None:
    text = _text(name)
    if not text:
        return None
    try:
        return parse_day(text)
    except InvalidDate as exc:
        raise BadQuery(f"{name}: {exc}.", {name: str(exc)}) from None


def _known_at() -> datetime | None:
    text = _text("known_at")
    if not text:
        return None
    try:
        return parse_instant(text)
    except InvalidDate as exc:
        raise BadQuery(f"known_at: {exc}.", {"known_at": str(exc)}) from None


def _choice(name: str, allowed: Iterable[str]) -> str | None:
    text = _text(name)
    if not text:
        return None
    if text not in allowed:
        raise BadQuery(f"{name}: {text!r} is not one of the choices.", {name: "is not one of the choices"})
    return text


def _query() -> str | None:
    text = _text("q")
    if len(text) > MAX_QUERY:
        raise BadQuery(f"q: the search text is longer than {MAX_QUERY} characters.",
                       {"q": f"longer than {MAX_QUERY} characters"})
    return text or None


def _filters() -> dict[str, str | None]:
    return {
        "jurisdiction": _choice("jurisdiction", JURISDICTIONS),
        "instrument": _choice("instrument", INSTRUMENTS),
        "q": _query(),
    }


def page_url(endpoint: str, **params: Any) -> str:
    """A page's address with only the parameters that say something."""
    return url_for(endpoint, **{k: v for k, v in params.items() if v not in (None, "")})


def _time_params() -> dict[str, str]:
    """``as_of`` and ``known_at`` of this request, kept by the links to other pages."""
    kept = {}
    for name, check in (("as_of", parse_day), ("known_at", parse_instant)):
        value = _text(name)
        try:
            if value and check(value):
                kept[name] = value
        except InvalidDate:
            pass  # a bad value is reported by the page itself; links simply drop it
    return kept


def _filter_choices(known_at: datetime | None = None) -> dict[str, Any]:
    """The filter menus: the jurisdictions that rules name (a small query, never the world)."""
    codes = sorted(current_tracker().jurisdictions(known_at), key=present.jurisdiction_name)
    return {
        "jurisdictions": [(c, f"{present.jurisdiction_name(c)} ({c})") for c in codes],
        "instruments": [(i, present.INSTRUMENT_LABELS[i]) for i in INSTRUMENTS],
        "kinds": [(k, present.KIND_LABELS[k]) for k in KINDS],
    }


# Pages ------------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    """The timeline of actions, newest first, grouped by year and month, a page at a time."""
    filters = _filters()
    kind = _choice("kind", KINDS)
    day_from, day_to = _day("from"), _day("to")
    cursor = _text("cursor") or None
    tracker = current_tracker()
    try:
        items, next_cursor = tracker.timeline(
            newest_first=True, kind=kind, day_from=day_from.isoformat() if day_from else None,
            day_to=day_to.isoformat() if day_to else None, cursor=cursor, **filters,
            limit=current_app.config.get("TIMELINE_PAGE_SIZE", TIMELINE_PAGE_SIZE),
        )
    except InvalidInput as exc:  # only the cursor can be wrong here: the rest is checked above
        raise BadQuery(f"cursor: {exc.detail}", exc.errors) from None
    args = {**filters, "kind": kind, "from": _text("from"), "to": _text("to")}
    return render_template(
        "index.html",
        groups=_group_by_month(items),
        args=args,
        filtered=any(args.values()),
        cursor=cursor,
        next_url=page_url("pages.index", **args, cursor=next_cursor) if next_cursor else None,
        first_url=page_url("pages.index", **args) if cursor else None,
        choices=_filter_choices(),
    )


def _group_by_month(items: list[dict]) -> list[dict[str, Any]]:
    """Years, then months within them; actions dated only to a year get a group of their own."""
    years: list[dict[str, Any]] = []
    for item in items:
        parsed = PolicyDate.parse(item["effective"])
        year = parsed.start.year
        if parsed.precision == YEAR:
            key, label = "year", f"Sometime in {year}"
        else:
            key, label = f"{parsed.start.month:02d}", present.MONTHS[parsed.start.month - 1]
        if not years or years[-1]["year"] != year:
            years.append({"year": year, "months": []})
        months = years[-1]["months"]
        if not months or months[-1]["key"] != key:
            months.append({"key": key, "label": label, "entries": []})
        months[-1]["entries"].append(item)
    return years


NEAR = 20  # actions a rule's page shows on each side of its day; the rest are a page away
HISTORY_PAGE = 50  # actions on one page of a rule's history


@bp.get("/rules/<rule_id>")
def rule(rule_id: str) -> str:
    """One rule: its state on a day, why, a chart over time, the actions near the day and its
    linked rules."""
    as_of = _day("as_of") or _today()
    requested = _known_at()
    tracker = current_tracker()
    state = tracker.state(rule_id, as_of, requested)
    # One instant for every question on this page, so its parts agree with each other.
    known_at = state["known_at"]
    instant = parse_instant(known_at)
    _, history = tracker.history(rule_id, instant)
    _, segments = tracker.state_segments(rule_id, instant)

    keep_known = _text("known_at") or None
    # The chart links every period to its day: the address is made once, not once a period.
    base = url_for("pages.rule", rule_id=rule_id)
    kept = {"known_at": keep_known} if keep_known else {}

    def link(day: str) -> str:
        return f"{base}?{urlencode({'as_of': day, **kept})}#chart"

    # The actions around the day: those starting on or before it come first in the history.
    day = as_of.isoformat()
    split = bisect.bisect_right([PolicyDate.parse(a["effective"]).start for a in history], as_of)
    first, last = max(0, split - NEAR), min(len(history), split + NEAR)
    index = {item["id"]: i for i, item in enumerate(history)}

    def history_url(at: int) -> str:
        """The page of the rule's history holding its action number ``at`` (from 0)."""
        return page_url("pages.rule_history", rule_id=rule_id, as_of=day, known_at=known_at,
                        page=at // HISTORY_PAGE + 1)

    def action_url(action_id: str) -> str:
        at = index.get(action_id)
        if at is None or first <= at < last:
            return "#" + anchor(action_id)
        return history_url(at) + "#" + anchor(action_id)

    chart = build_chart(segments, _today(), as_of, link)
    # The periods listed under the chart: those around the day's, the others a link away.
    shown = next((i for i, period in enumerate(chart.periods) if period.current), 0)
    periods_first = max(0, shown - NEAR)
    periods_last = min(len(chart.periods), shown + NEAR + 1)
    by_id = {item["id"]: item for item in history}
    based_on = [by_id[i] for i in state["based_on"] if i in by_id]
    return render_template(
        "rule.html",
        state=state,
        rule=state["rule"],
        as_of=as_of,
        known_at=known_at,
        requested_known_at=_text("known_at"),
        chart=chart,
        history=history[first:last],
        history_total=len(history),
        applied=set(state["based_on"]),
        earlier=first,
        later=len(history) - last,
        earlier_url=history_url(first - 1) if first else None,
        later_url=history_url(last) if last < len(history) else None,
        full_history_url=history_url(first),
        action_url=action_url,
        based_on=based_on,
        why_earlier=max(0, len(based_on) - NEAR),  # the last ones decide: the rest are listed
        periods_first=periods_first,
        periods_last=periods_last,
        periods_earlier=periods_first,
        periods_later=len(chart.periods) - periods_last,
        uncertain=_uncertainty(state, by_id, as_of),
        links=_linked_rules(state["rule"], as_of, instant),
        permalink=page_url("pages.rule", rule_id=rule_id, as_of=as_of.isoformat(), known_at=known_at),
        day_before=link((as_of - timedelta(days=1)).isoformat()) if as_of > date.min else None,
        day_after=link((as_of + timedelta(days=1)).isoformat()) if as_of < date.max else None,
    )


@bp.get("/rules/<rule_id>/history")
def rule_history(rule_id: str) -> str:
    """A rule's whole history, a page of actions at a time."""
    as_of = _day("as_of")
    requested = _known_at()
    number = _page_number()
    tracker = current_tracker()
    known_at, history = tracker.history(rule_id, requested)
    instant = parse_instant(known_at)
    state = tracker.state(rule_id, as_of, instant)
    pages = max(1, -(-len(history) // HISTORY_PAGE))
    if number > pages:
        raise BadQuery(f"page: this history has {pages} page{'s' if pages > 1 else ''}.",
                       {"page": f"must be at most {pages}"})
    start = (number - 1) * HISTORY_PAGE
    shown = history[start:start + HISTORY_PAGE]
    day = as_of.isoformat() if as_of else None

    def page_link(n: int) -> str:
        return page_url("pages.rule_history", rule_id=rule_id, as_of=day, known_at=known_at, page=n)

    return render_template(
        "rule_history.html",
        rule=state["rule"],
        known_at=known_at,
        history=shown,
        first=start + 1,
        last=start + len(shown),
        total=len(history),
        rule_url=page_url("pages.rule", rule_id=rule_id, as_of=day, known_at=_text("known_at")),
        prev_url=page_link(number - 1) if number > 1 else None,
        next_url=page_link(number + 1) if number < pages else None,
    )


def _page_number() -> int:
    text = _text("page")
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise BadQuery("page: must be a whole number from 1.", {"page": "must be a whole number from 1"})
    return int(text)


def _uncertainty(state: dict, actions: dict[str, dict], as_of: date) -> list[dict[str, str]]:
    """Why an answer is uncertain: the imprecise dates the day falls inside."""
    notes = []
    for action_id in state["uncertain_because"]:
        action = actions.get(action_id)
        if action is None:
            continue
        until = action.get("until")
        if action["kind"] == "pause" and until and PolicyDate.parse(until).contains(as_of):
            text = (f"The pause ends in {present.policy_date(until)} ({present.precision_note(until)}): "
                    f"it may or may not have ended by {present.day(as_of)}.")
        else:
            effective = action["effective"]
            text = (f"This {present.KIND_LABELS[action['kind']].lower()} took effect in "
                    f"{present.policy_date(effective)} ({present.precision_note(effective)}): "
                    f"it may or may not have applied yet on {present.day(as_of)}.")
        notes.append({"id": action_id, "text": text})
    return notes


def _linked_rules(rule: dict, as_of: date, known_at: datetime) -> list[dict[str, Any]]:
    """Rules this one names, and rules that name this one, with their state on the same day."""
    tracker = current_tracker()
    pairs = [(link["rule"], present.RELATION_LABELS[link["relation"]][0]) for link in rule["links"]]
    pairs += [(other, present.RELATION_LABELS[relation][1])
              for other, relation in tracker.rules_linking_to(rule["id"], known_at)]
    linked = []
    for other, relation in pairs:
        try:
            state = tracker.state(other, as_of, known_at)
        except NotFound:  # named before it was registered
            state = None
        linked.append({"id": other, "relation": relation, "state": state})
    return linked


LIST_PAGE_SIZE = 50  # rules or changes on one page of /state and /diff; TIMELINE_LIST_PAGE_SIZE overrides


def _list_page_size() -> int:
    return current_app.config.get("TIMELINE_LIST_PAGE_SIZE", LIST_PAGE_SIZE)


def _rule_id(name: str) -> str | None:
    """A rule id a paging link carries (``after`` or ``before``)."""
    text = _text(name)
    if text and not re.fullmatch(RULE_ID, text):
        raise BadQuery(f"{name}: {text!r} is not a rule id.", {name: "is not a rule id"})
    return text or None


def _pager(endpoint: str, items: list[dict], rule_id: Any, more: bool, after: str | None,
           before: str | None, **params: Any) -> dict[str, str | None]:
    """Links to the first, previous and next pages of a list in rule id order, with the
    instant pinned in ``params``: every page of one listing is one snapshot."""
    if not items:
        return {"first": page_url(endpoint, **params) if after or before else None,
                "previous": None, "next": None}
    # Going forward, more means a next page; going back, more means a previous one. Coming
    # from a page either way, the page on the other side exists.
    has_next = more if before is None else True
    has_previous = (more if before is not None else after is not None)
    return {
        "first": page_url(endpoint, **params) if has_previous else None,
        "previous": page_url(endpoint, **params, before=rule_id(items[0])) if has_previous else None,
        "next": page_url(endpoint, **params, after=rule_id(items[-1])) if has_next else None,
    }


def _tally(rows: Iterable[tuple], labels: dict[str, str], column: int) -> list[tuple[str, str, int]]:
    """Counts by one column of aggregate rows, largest first: (value, label, count)."""
    totals: dict[str, int] = {}
    for row in rows:
        totals[row[column]] = totals.get(row[column], 0) + row[-1]
    return sorted(((value, labels.get(value, value), n) for value, n in totals.items()),
                  key=lambda item: (-item[2], item[1]))


@bp.get("/state")
def state() -> str:
    """Every rule on a day: counts by status, jurisdiction and instrument, and a page of rules."""
    as_of = _day("as_of") or _today()
    filters = _filters()
    status = _choice("status", present.STATUS_ORDER)
    after, before = _rule_id("after"), _rule_id("before")
    tracker = current_tracker()
    # One instant for the whole listing: the counts, this page and the links to the others.
    known_at = tracker.known_at(_known_at())
    counts = tracker.state_counts(as_of, known_at, **filters)
    states, more = tracker.state_page(as_of, known_at, _list_page_size(), after=after,
                                      before=before, status=status, **filters)
    by_status = {row_status: n for row_status, _, n in _tally(counts, {}, 0)}
    total = sum(by_status.values())
    pinned = {"as_of": as_of.isoformat(), "known_at": known_at, **filters, "status": status}
    return render_template(
        "state.html",
        as_of=as_of,
        known_at=known_at,
        requested_known_at=_text("known_at"),
        args={**filters, "status": status},
        states=states,
        total=total,
        shown_total=by_status.get(status, 0) if status else total,
        by_status=[(s, by_status[s]) for s in present.STATUS_ORDER if s in by_status],
        by_jurisdiction=_tally(counts, {}, 1),
        by_instrument=_tally(counts, present.INSTRUMENT_LABELS, 2),
        status_url=lambda s: page_url("pages.state", **{**pinned, "status": s}),
        pages=_pager("pages.state", states, lambda s: s["rule"]["id"], more, after, before,
                     **pinned),
        choices={**_filter_choices(parse_instant(known_at)),
                 "statuses": [(s, present.STATUS_LABELS[s]) for s in present.STATUS_ORDER]},
        csv_url=page_url("pages.state_csv", **pinned),
        permalink=page_url("pages.state", **pinned),
    )


CSV_COLUMNS = ("rule_id", "title", "jurisdiction", "instrument", "targets", "status", "rate_percent",
               "conditions", "since", "until", "certain", "as_of", "known_at")


def _state_rows(states: Iterable[dict]) -> Iterator[dict[str, Any]]:
    for s in states:
        rule = s["rule"]
        yield {**s, "rule_id": rule["id"], "title": rule["title"],
               "jurisdiction": rule["jurisdiction"], "instrument": rule["instrument"],
               "targets": rule["targets"]}


@bp.get("/state.csv")
def state_csv() -> Response:
    """The /state page as CSV: one row per rule, streamed a keyset page of rules at a time."""
    as_of = _day("as_of") or _today()
    filters = {**_filters(), "status": _choice("status", present.STATUS_ORDER)}
    tracker = current_tracker()
    known_at = tracker.known_at(_known_at())
    states = tracker.iter_states(as_of, known_at, **filters)
    return Response(
        stream_with_context(research.csv_chunks(_state_rows(states), CSV_COLUMNS)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="timeline-state-{as_of.isoformat()}.csv"'},
    )



@bp.get("/diff")
def diff() -> str:
    """The rules whose state changed between two days: how many, by status, and a page of
    them with what happened in between."""
    today = _today()
    day_from = _day("from") or date(today.year - 1, 12, 31)
    day_to = _day("to") or today
    filters = {"jurisdiction": _choice("jurisdiction", JURISDICTIONS),
               "instrument": _choice("instrument", INSTRUMENTS)}
    after, before = _rule_id("after"), _rule_id("before")
    tracker = current_tracker()
    known_at = tracker.known_at(_known_at())
    counts = tracker.diff_counts(day_from, day_to, known_at, **filters)
    changes, more = tracker.diff_page(day_from, day_to, known_at, _list_page_size(),
                                      after=after, before=before, **filters)
    low, high = sorted((day_from, day_to))
    between = tracker.actions_between([c["rule_id"] for c in changes], low, high, known_at)
    for change in changes:
        change["actions"] = between[change["rule_id"]]
    on_from = {s: n for s, _, n in _tally(counts, {}, 0)}
    on_to = {s: n for s, _, n in _tally(counts, {}, 1)}
    presets = []
    for year in (today.year, today.year - 1, today.year - 2):
        end = min(date(year, 12, 31), today)
        label = f"{year} so far" if end == today else str(year)
        presets.append((label, page_url("pages.diff", **{"from": f"{year - 1}-12-31", "to": end.isoformat()},
                                        known_at=_text("known_at"), **filters)))
    pinned = {"from": day_from.isoformat(), "to": day_to.isoformat(), "known_at": known_at,
              **filters}
    return render_template(
        "diff.html",
        day_from=day_from,
        day_to=day_to,
        known_at=known_at,
        requested_known_at=_text("known_at"),
        args=filters,
        changes=changes,
        total=sum(on_from.values()),
        by_status=[(s, on_from.get(s, 0), on_to.get(s, 0)) for s in present.STATUS_ORDER
                   if s in on_from or s in on_to],
        pages=_pager("pages.diff", changes, lambda c: c["rule_id"], more, after, before,
                     **pinned),
        presets=presets,
        choices=_filter_choices(parse_instant(known_at)),
        permalink=page_url("pages.diff", **pinned),
    )


# Wiring -----------------------------------------------------------------------------------------


def _security_headers(response: Response) -> Response:
    """Every HTML page outside the API gets the policy, error pages included."""
    if response.mimetype == "text/html" and not request.path.startswith("/api/"):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _template_context() -> dict[str, Any]:
    return {"time_params": _time_params(), "page_url": page_url,
            "status_order": present.STATUS_ORDER, "status_labels": present.STATUS_LABELS}


def anchor(action_id: str) -> str:
    """The element id of an action in a rule's history, for links to it."""
    return "action-" + action_id


def init_app(app: Flask) -> None:
    present.register(app)
    app.jinja_env.filters["anchor"] = anchor
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    app.context_processor(_template_context)
