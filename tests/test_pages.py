"""The web pages through Flask's test client: what a reader sees, and what a hostile title cannot do."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest

from timeline.domain.dates import parse_instant
from timeline.schemas import ActionSchema, RuleSchema
from timeline.service import Tracker
from timeline.web import create_app

from tests.listings import diff, states

H200 = "us-h200-export-licensing-cn"
BILL = "us-safe-chips-bill"
TARIFF = "us-fentanyl-tariff-cn"
HOSTILE = "<script>alert(1)</script>"
SOURCE = [{"title": "A report", "publisher": "A paper", "published": "2025-12-09",
           "quote": "Something happened."}]


# Helpers ----------------------------------------------------------------------------------------


class Page(HTMLParser):
    """Just enough of a page's structure to check it as a reader (or a screen reader) would."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {"title": [], "h1": []}
        self._open: list[str] = []
        self.text_parts: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag not in self.VOID:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
            return
        if "title" in self._open and "head" in self._open:
            self.texts["title"].append(data)
        if "h1" in self._open:
            self.texts["h1"].append(data)
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def heading(self, tag: str) -> str:
        return " ".join("".join(self.texts[tag]).split())

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag
                and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]


def get(client, url: str, status: int = 200) -> Page:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return Page(response.get_data(as_text=True))


def register(tracker: Tracker, rule_id: str, title: str = "A rule", **fields) -> None:
    body = {"id": rule_id, "title": title, "jurisdiction": "US", "instrument": "export_control",
            "targets": ["CN"], **fields}
    tracker.register_rule(RuleSchema().load(body))


def record(tracker: Tracker, rule_id: str, **action) -> str:
    action.setdefault("sources", SOURCE)
    return tracker.record_action(rule_id, ActionSchema().load(action)).id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """The bundled fixtures, loaded once for the tests that only read them."""
    from timeline.config import Settings
    from timeline.fixtures import bundled_fixtures, load_fixtures

    tracker = Tracker(Settings(home=tmp_path_factory.mktemp("pages-home")))
    load_fixtures(tracker, bundled_fixtures())
    yield tracker
    tracker.close()


@pytest.fixture(scope="module")
def client(site: Tracker):
    return create_app({"TESTING": True}, tracker=site).test_client()


# Every page ------------------------------------------------------------------------------------

PAGES = ["/", f"/rules/{H200}", "/state", "/state?as_of=2025-12-09", "/diff",
         "/diff?from=2024-12-31&to=2025-12-31", f"/rules/{TARIFF}?as_of=2025-10-15",
         f"/data?jurisdiction=US&rule={H200}&q=chips&known_at=2025-12-10T00:00:00Z"]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_has_a_title_one_h1_labelled_controls_and_a_strict_csp(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    html = response.get_data(as_text=True)
    page = Page(html)
    assert page.heading("title").endswith("· timeline") and len(page.heading("title")) > 12
    assert len(page.all("h1")) == 1 and page.heading("h1")
    labelled = {a["for"] for a in page.all("label")}
    controls = [a for t, a in page.elements if t in ("input", "select", "textarea")
                and a.get("type") not in ("hidden", "submit")]
    assert controls
    for control in controls:
        assert control.get("id") in labelled or control.get("aria-label"), control
    # The policy forbids inline code and styles, so the pages must have none.
    assert all(not body.strip() for body in page.scripts)
    assert not any("style" in attrs for _, attrs in page.elements)
    assert not page.all("style")
    for tag, attrs in page.elements:
        for name in ("src", "href"):
            if tag in ("script", "link", "img") and attrs.get(name):
                assert attrs[name].startswith("/"), f"outside request: {attrs[name]}"


def test_static_assets_are_served_from_the_app(client) -> None:
    for path in ("/static/style.css", "/static/app.js", "/static/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import|fetch\(|XMLHttpRequest", body), path


def test_unknown_pages_and_rules_answer_an_html_404(client) -> None:
    for url in ("/no-such-page", "/rules/no-such-rule"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert "Content-Security-Policy" in response.headers
        page = Page(response.get_data(as_text=True))
        assert page.heading("h1") == "Not Found" or page.heading("h1") == "Not found"


@pytest.mark.parametrize("url, field", [
    ("/?from=2025-13-01", "from"),
    ("/?to=yesterday", "to"),
    ("/?kind=explode", "kind"),
    ("/?instrument=cannon", "instrument"),
    ("/?jurisdiction=XX", "jurisdiction"),
    ("/?cursor=not-a-cursor", "cursor"),
    (f"/rules/{H200}?as_of=2025-12", "as_of"),
    (f"/rules/{H200}?known_at=last+week", "known_at"),
    ("/state?as_of=9+December", "as_of"),
    ("/state.csv?as_of=2025-02-30", "as_of"),
    ("/diff?from=2025", "from"),
])
def test_bad_parameters_answer_400_naming_the_field(client, url: str, field: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    page = Page(response.get_data(as_text=True))
    assert page.heading("h1") == "Bad request"
    assert f"{field}:" in page.text


# The timeline -----------------------------------------------------------------------------------


def test_timeline_is_newest_first_grouped_by_year_and_month(client) -> None:
    html = client.get("/").get_data(as_text=True)
    page = Page(html)
    years = [a["id"] for a in page.all("h2") if a.get("id", "").startswith("year-")]
    assert years == ["year-2025", "year-2022", "year-2010"]
    text = page.text
    assert text.index("December") < text.index("October") < text.index("September")
    assert "Sometime in 2025" in text and "(month not known)" in text
    # Each entry: kind in words, rule, jurisdiction → targets, the date with its precision.
    assert "Easing" in text and "Restriction" in text and "Proposal" in text
    assert "US export licensing of Nvidia H200 chips to China" in text
    assert "United States → China" in text and "China → Japan" in text
    assert ">8 December 2025</time>" in html
    assert ">October 2025</time>" in html and ">2025-10<" not in html
    assert "Source:" in text
    dates = re.findall(r'<div class="entry-date"><time class="pdate[^"]*" datetime="([0-9-]+)"', html)
    assert len(dates) == 15  # every action of the bundled fixtures, on one page
    padded = [(d + "-01-01")[:10] if len(d) == 4 else (d + "-01")[:10] for d in dates]
    assert padded == sorted(padded, reverse=True)


def test_timeline_entries_carry_kind_colour_and_text(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<li class="entry kind-ease">', html)
    assert '<span class="badge kind-ease" data-kind="ease">Easing</span>' in html


@pytest.mark.parametrize("query, present, absent", [
    ("kind=ease", ["US export licensing of Nvidia H200"], ["Safe Chips bill", "fentanyl tariff"]),
    ("jurisdiction=CN", ["rare earth embargo on Japan"], ["US export licensing of Nvidia H200"]),
    ("instrument=import_tariff", ["US fentanyl tariff"], ["Safe Chips bill"]),
    ("q=soybean", ["soybean"], ["US export licensing of Nvidia H200"]),
    # Dated only to 2025, the fentanyl tariff may fall in December: it is listed.
    ("from=2025-12-01&to=2025-12-31", ["Safe Chips bill", "US export licensing of Nvidia H200",
                                       "US fentanyl tariff"],
     ["rare earth embargo on Japan", "US export controls on advanced AI chips"]),
])
def test_timeline_filters(client, query: str, present: list[str], absent: list[str]) -> None:
    page = get(client, "/?" + query)
    entries = " ".join(page.text.split("Show actions", 1)[1:])
    for text in present:
        assert text in entries
    for text in absent:
        assert text not in entries
    # The form shows the filters that are applied, so the next search starts from them.
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if page.all("select", id=name):
            chosen = [a["value"] for t, a in page.elements if t == "option" and "selected" in a]
            assert value in chosen
        else:
            assert page.all("input", id=name)[0]["value"] == value


def test_timeline_with_no_match_says_so(client) -> None:
    page = get(client, "/?q=zeppelin")
    assert "No actions match these filters." in page.text


def test_timeline_comes_in_pages_that_keep_the_filters(site: Tracker) -> None:
    client = create_app({"TESTING": True, "TIMELINE_PAGE_SIZE": 4}, tracker=site).test_client()
    seen: list[str] = []
    url = "/?jurisdiction=CN"
    pages = 0
    while url:
        html = client.get(url).get_data(as_text=True)
        ids = re.findall(r'href="/rules/[^"#]+#action-([^"]+)"', html)
        assert len(ids) <= 4
        seen.extend(dict.fromkeys(ids))
        pages += 1
        match = re.search(r'<a class="next" href="([^"]+)" rel="next">', html)
        url = match.group(1).replace("&amp;", "&") if match else ""
        if url:
            assert parse_qs(urlsplit(url).query)["jurisdiction"] == ["CN"]
            assert "Back to the newest" in client.get(url).get_data(as_text=True)
    everything = [a["id"] for a in site.timeline(newest_first=True, jurisdiction="CN", limit=100)[0]]
    assert pages == 2
    assert seen == everything


# A rule --------------------------------------------------------------------------------------------


def status_on(client, as_of: str, rule: str = H200, **extra: str) -> tuple[str, str]:
    query = "&".join(f"{k}={v}" for k, v in {"as_of": as_of, **extra}.items())
    html = client.get(f"/rules/{rule}?{query}").get_data(as_text=True)
    match = re.search(r'<p class="state-main"><span class="badge status-(\w+)"', html)
    assert match, html[:3000]
    return match.group(1), html


def test_rule_page_shows_restricted_before_8_december_2025_and_eased_after(client) -> None:
    status, html = status_on(client, "2025-12-07")
    assert status == "restricted"
    assert "On 7 December 2025" in html
    status, html = status_on(client, "2025-12-08")
    assert status == "eased"
    text = Page(html).text
    assert "25% fee" in text
    assert "Sales only to approved customers vetted by the US Commerce Department" in text
    assert "Since 8 December 2025" in text


def test_rule_page_has_an_as_of_form_that_works_without_javascript(client) -> None:
    page = get(client, f"/rules/{H200}?as_of=2025-12-09")
    form = page.all("form", class_="when")[0]
    assert form["method"] == "get" and form["action"] == f"/rules/{H200}"
    as_of = page.all("input", name="as_of")[0]
    assert as_of["type"] == "date" and as_of["value"] == "2025-12-09"
    assert page.all("input", name="known_at")
    assert page.all("button", type="submit")
    steps = [a["href"] for a in page.all("a") if "as_of=2025-12-08" in a.get("href", "")
             or "as_of=2025-12-10" in a.get("href", "")]
    assert steps, "day before and day after links"


def test_rule_page_explains_why_and_when_uncertain(client) -> None:
    _, html = status_on(client, "2025-10-15", rule=TARIFF)
    text = Page(html).text
    assert "Why" in text
    assert "Uncertain." in text
    assert "October 2025 (known only to the month)" in text
    assert 'href="#action-us-fentanyl-tariff-halved-10-2025-10"' in html
    _, html = status_on(client, "2026-03-01", rule=TARIFF)
    assert "Uncertain." not in Page(html).text


def test_rule_page_chart_shows_the_states_over_time(client) -> None:
    _, html = status_on(client, "2025-12-09")
    assert '<svg class="chart-svg"' in html
    bands = re.findall(r'<svg class="band status-(\w+)( current)?"', html)
    assert [b[0] for b in bands] == ["none", "restricted", "eased"]
    assert [b[0] for b in bands if b[1]] == ["eased"]
    assert ">Eased · 25%</text>" in html and ">Restricted</text>" in html
    assert ">Shown: 9 Dec 2025</text>" in html and ">Today</text>" in html
    assert 'class="hatch"' in html  # 2022 is known only to the year
    assert ">25%</text>" in html  # the rate bar
    # Moving the day moves the highlighted band.
    _, html = status_on(client, "2025-12-07")
    assert re.findall(r'<svg class="band status-(\w+) current"', html) == ["restricted"]
    assert ">Shown: 7 Dec 2025</text>" in html


def test_chart_shows_a_scheduled_pause_end(tracker: Tracker) -> None:
    today = datetime.now(timezone.utc).date()
    register(tracker, "paused-rule", "A paused rule")
    record(tracker, "paused-rule", kind="restrict", effective=f"{today.year - 2}-03-01")
    record(tracker, "paused-rule", kind="pause", effective=f"{today.year - 1}-06-01",
           until=f"{today.year + 2}-01")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    html = client.get("/rules/paused-rule").get_data(as_text=True)
    assert re.findall(r'<svg class="band status-(\w+)', html) == ["none", "restricted", "paused", "restricted"]
    assert f"The pause ends: Jan {today.year + 2}</text>" in html
    assert 'class="scheduled-line"' in html
    text = Page(html).text
    assert f"From January {today.year + 2}" in text and "The pause ends" in text
    assert f"Paused until January {today.year + 2}" in text


def test_a_rate_too_narrow_to_read_keeps_its_bar_but_not_its_label(tracker: Tracker) -> None:
    register(tracker, "fee-rule", "A fee that changed for a day")
    record(tracker, "fee-rule", kind="fee", effective="2010-01-01", rate_percent=10)
    record(tracker, "fee-rule", kind="fee", effective="2020-06-01", rate_percent=20)
    record(tracker, "fee-rule", kind="fee", effective="2020-06-02", rate_percent=30)
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    html = client.get("/rules/fee-rule?as_of=2024-01-01").get_data(as_text=True)
    assert html.count('<svg class="rate-bar"') == 3  # one a day is still drawn
    assert ">10%</text>" in html and ">30%</text>" in html
    assert ">20%</text>" not in html


def test_a_rule_that_changed_every_day_draws_those_days_as_one_striped_band(tracker: Tracker) -> None:
    register(tracker, "busy-rule", "A rule that changed every day for a while")
    record(tracker, "busy-rule", kind="restrict", effective="1995-01-01")
    for n in range(1, 201):
        record(tracker, "busy-rule", kind=("ban", "ease")[n % 2], effective=f"2005-{1 + n // 28:02d}-{1 + n % 28:02d}")
    record(tracker, "busy-rule", kind="ban", effective="2015-01-01")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    html = client.get("/rules/busy-rule?as_of=2005-03-03").get_data(as_text=True)
    bands = re.findall(r'<svg class="band status-(\w+)( current)?"', html)
    assert [b[0] for b in bands] == ["none", "restricted", "changing", "banned", "banned"]
    assert bands[2][1] == " current"  # the day shown falls among the busy days
    assert "Striped: periods too short to draw apart, listed below" in Page(html).text
    # The last busy day's period lasts until 2015: wide enough to draw on its own.
    assert ('aria-label="199 periods, too short to draw apart, from 2 January 2005 to 4 August 2005"'
            in html)


def test_rule_page_lists_the_full_history_with_sources(client) -> None:
    _, html = status_on(client, "2025-12-09")
    text = Page(html).text
    for action_id in ("us-h200-restricted-2022", "us-h200-eased-2025-12-08", "us-h200-fee-25-2025-12-08"):
        assert f'id="action-{action_id}"' in html
    assert "China has been less than enthusiastic about Donald Trump's Nvidia H-200 chip easing" in text
    assert "On December 8, President Donald Trump announced" in text
    # Three quotes from one article are one source with three quotes, not three sources.
    eased = html.split('id="action-us-h200-eased-2025-12-08"')[1].split("</li>\n    \n")[0]
    assert eased.count("<blockquote>") == 3
    assert eased.count('class="source-title"') == 1


def test_rule_page_shows_linked_rules_both_ways(client) -> None:
    text = Page(client.get(f"/rules/{H200}?as_of=2025-12-09").get_data(as_text=True)).text
    assert "Could be blocked by Safe Chips bill to block easing of US AI chip export controls to China" in text
    text = Page(client.get(f"/rules/{BILL}?as_of=2025-12-09").get_data(as_text=True)).text
    assert "Would block US export licensing of Nvidia H200 chips to China" in text


def test_rule_page_shows_corrections_and_retractions(tracker: Tracker) -> None:
    register(tracker, "tariff-rule", "A tariff", instrument="import_tariff")
    fee = record(tracker, "tariff-rule", kind="fee", effective="2025-03-04", rate_percent=20,
                 summary="A tariff of twenty percent.")
    wrong = record(tracker, "tariff-rule", kind="lift", effective="2025-06-01",
                   summary="The tariff was lifted.")
    before = tracker.known_at()
    tracker.correct_action("tariff-rule", fee, {"rate_percent": 25.0}, "The notice said 25%, not 20%.")
    tracker.retract_action("tariff-rule", wrong, "No lift happened; a misread headline.")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()

    html = client.get("/rules/tariff-rule?as_of=2025-07-01").get_data(as_text=True)
    text = Page(html).text
    assert re.search(r'class="state-main"><span class="badge status-in_force"', html)
    assert "25% tariff" in text
    assert "Corrected on" in text and "The notice said 25%, not 20%." in text
    assert "<del>20%</del>" in html and "<ins>25%</ins>" in html
    retracted = html.split(f'id="action-{wrong}"')[0].rsplit("<li", 1)[1]
    assert "retracted" in retracted
    assert "No lift happened; a misread headline." in text
    assert "<del>The tariff was lifted.</del>" in html

    # As known before the correction and the retraction: lifted, at the old rate before that.
    html = client.get(f"/rules/tariff-rule?as_of=2025-07-01&known_at={before}").get_data(as_text=True)
    assert re.search(r'class="state-main"><span class="badge status-lifted"', html)
    assert "Corrected on" not in html and "No lift happened" not in html
    html = client.get(f"/rules/tariff-rule?as_of=2025-05-01&known_at={before}").get_data(as_text=True)
    assert "20% tariff" in Page(html).text


def test_permalinks_and_links_keep_as_of_and_known_at(client) -> None:
    known_at = "2030-01-01T00:00:00Z"  # later than now: answered as of now, and echoed
    page = get(client, f"/rules/{H200}?as_of=2025-12-09&known_at={known_at}")
    permalink = [a["href"] for a in page.all("a", rel="bookmark")][0]
    params = parse_qs(urlsplit(permalink).query)
    assert params["as_of"] == ["2025-12-09"]
    echoed = parse_instant(params["known_at"][0])
    assert echoed <= datetime.now(timezone.utc)
    # The permalink answers the same, whatever is recorded later.
    nav = [a["href"] for a in page.all("a") if a.get("href", "").startswith("/state?")]
    assert nav and "as_of=2025-12-09" in nav[0] and "known_at=" in nav[0]
    linked = [a["href"] for a in page.all("a", class_="linked-title")]
    assert linked and all("as_of=2025-12-09" in href and "known_at=" in href for href in linked)

    state_page = get(client, "/state?as_of=2025-12-09")
    permalink = [a["href"] for a in state_page.all("a", rel="bookmark")][0]
    assert "as_of=2025-12-09" in permalink and "known_at=" in permalink
    diff_page = get(client, "/diff?from=2024-12-31&to=2025-12-31")
    permalink = [a["href"] for a in diff_page.all("a", rel="bookmark")][0]
    assert "from=2024-12-31" in permalink and "to=2025-12-31" in permalink and "known_at=" in permalink


def test_a_permalink_answers_the_same_after_later_records(loaded: Tracker) -> None:
    client = create_app({"TESTING": True}, tracker=loaded).test_client()
    page = get(client, f"/rules/{H200}?as_of=2025-12-09")
    permalink = [a["href"] for a in page.all("a", rel="bookmark")][0]
    record(loaded, H200, kind="ban", effective="2025-12-09", summary="A ban.")
    status, _ = status_on(client, "2025-12-09")
    assert status == "banned"
    html = client.get(permalink).get_data(as_text=True)
    assert re.search(r'class="state-main"><span class="badge status-eased"', html)


@pytest.mark.parametrize("as_of", ["0001-01-01", "9999-12-31"])
def test_rule_page_answers_on_the_first_and_last_days(client, as_of: str) -> None:
    status, html = status_on(client, as_of)
    assert status == ("none" if as_of.startswith("0001") else "eased")
    assert '<svg class="chart-svg"' in html


def test_rule_with_no_action_yet(tracker: Tracker) -> None:
    register(tracker, "empty-rule", "Nothing yet")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    text = get(client, "/rules/empty-rule").text
    assert "No measure" in text and "No recorded action had taken effect" in text
    assert "No action is recorded for this rule yet." in text


@pytest.fixture(scope="module")
def long_rule(tmp_path_factory: pytest.TempPathFactory):
    """A rule with 120 actions (one a year from 1901, alternating ban and lift), and a rule that
    links to it."""
    from timeline.config import Settings

    tracker = Tracker(Settings(home=tmp_path_factory.mktemp("long-rule-home")))
    register(tracker, "long-rule", "A long rule")
    for year in range(1901, 2021):
        record(tracker, "long-rule", id=f"act-{year}", kind="ban" if year % 2 else "lift",
               effective=f"{year}-06-01", summary=f"What happened in {year}.")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    client.before_links = tracker.known_at()
    register(tracker, "linking-rule", "A rule naming the long one",
             links=[{"rule": "long-rule", "relation": "amends"}])
    yield client
    tracker.close()


def test_a_long_rule_page_shows_the_actions_near_its_day_and_the_rest_a_page_away(long_rule) -> None:
    page = get(long_rule, "/rules/long-rule?as_of=1960-12-31")
    shown = [i for i in (li.get("id", "") for li in page.all("li")) if i.startswith("action-act-")]
    # The 20 actions up to the day and the 20 after it, in effective order.
    assert shown == [f"action-act-{year}" for year in range(1941, 1981)]
    assert "The 40 actions nearest 31 December 1960, of 120" in page.text
    earlier = [a["href"] for a in page.all("a", rel="prev")]
    later = [a["href"] for a in page.all("a", rel="next")]
    assert len(earlier) == 1 and len(later) == 1
    # Each leads to the page of the history holding the next action out of sight.
    assert "act-1940" in get(long_rule, earlier[0]).text
    assert 'id="action-act-1981"' in long_rule.get(later[0]).get_data(as_text=True)
    # The state rests on all 60 actions up to the day: the last 20 are listed, linked to their
    # place on the page, and the 40 before them are a link away, in the history.
    why = page.all("ol", class_="why")[0]
    assert why["start"] == "41"
    assert "(the last 20 of 60: the 40 before them are in the history)" in " ".join(page.text.split())
    assert any(a.get("href") == "#action-act-1960" for a in page.all("a"))
    before = [a["href"] for a in page.all("a") if a.get("href", "").endswith("#action-act-1940")]
    assert before and all("/rules/long-rule/history?" in href for href in before)
    assert 'id="action-act-1940"' in long_rule.get(before[0]).get_data(as_text=True)
    # The periods under the chart: the day's and 20 either side, the others a link away.
    html = long_rule.get("/rules/long-rule?as_of=1960-12-31").get_data(as_text=True)
    periods = html.split('<ol class="periods">')[1].split("</ol>")[0]
    assert periods.count("<li") == 41 and "From 1 June 1940" in periods
    assert "From 1 June 1939" not in periods and "From 1 June 1981" not in periods
    assert "earlier periods" in page.text and "later periods" in page.text


def test_a_long_rule_history_pages_through_every_action_once_in_order(long_rule) -> None:
    url = "/rules/long-rule/history"
    seen: list[str] = []
    pages = 0
    while url:
        page = get(long_rule, url)
        seen += [i.removeprefix("action-") for i in (li.get("id", "") for li in page.all("li"))
                 if i.startswith("action-")]
        following = [a["href"] for a in page.all("a", rel="next")]
        url = following[0] if following else None
        pages += 1
        assert all("known_at=" in href for href in following)  # pages of one snapshot
    assert seen == [f"act-{year}" for year in range(1901, 2021)]
    assert pages == 3
    get(long_rule, "/rules/long-rule/history?page=4", status=400)
    get(long_rule, "/rules/long-rule/history?page=zero", status=400)
    get(long_rule, "/rules/no-such-rule/history", status=404)


def test_rules_linking_to_a_rule_are_found_as_known_then(long_rule) -> None:
    text = get(long_rule, "/rules/long-rule?as_of=2000-01-01").text
    assert "A rule naming the long one" in text
    linked_at = long_rule.get("/rules/linking-rule").get_data(as_text=True)
    assert "A long rule" in Page(linked_at).text
    # Before the linking rule was registered, nothing links to the long one.
    before = long_rule.before_links
    assert "Linked rules" in text and "Linked rules" not in get(
        long_rule, f"/rules/long-rule?as_of=2000-01-01&known_at={before}").text


def test_rule_not_registered_at_known_at_is_404(client) -> None:
    response = client.get(f"/rules/{H200}?known_at=2001-01-01T00:00:00Z")
    assert response.status_code == 404 and response.mimetype == "text/html"


# Every rule on a day ------------------------------------------------------------------------------


def rows_of(html: str) -> list[tuple[str, str]]:
    """The rules listed on a /state page, as (title, status) in the order shown."""
    rows = re.findall(r'<tr class="rule-row status-edge-(\w+)">\s*<td><a class="rule-title" [^>]+>([^<]+)</a>',
                      html)
    return [(title.replace("&#39;", "'"), status) for status, title in rows]


def test_state_page_counts_rules_by_status_and_lists_them(client) -> None:
    html = client.get("/state?as_of=2025-12-09").get_data(as_text=True)
    text = Page(html).text
    assert "Every rule on 9 December 2025" in text
    assert "11 rules" in text
    counts = re.findall(r'<a class="count" href="([^"]+)">.*?data-status="(\w+)".*?<span class="n">(\d+)</span>',
                        html)
    assert sum(int(n) for _, _, n in counts) == 11
    order = [s for _, s, _ in counts]
    assert order == [s for s in ("banned", "restricted", "in_force", "paused", "eased", "proposed",
                                 "lifted", "none") if s in order]
    rows = rows_of(html)
    assert len(rows) == 11
    assert ("US export licensing of Nvidia H200 chips to China", "eased") in rows
    assert dict(counts_by_status(counts))["eased"] == sum(1 for _, s in rows if s == "eased")
    tallies = re.findall(r'<caption>By (\w+)</caption>(.*?)</table>', html, flags=re.S)
    assert [name for name, _ in tallies] == ["jurisdiction", "instrument"]
    for _, table in tallies:
        assert sum(int(n) for n in re.findall(r'<td class="n">(\d+)</td>', table)) == 11
    assert "United States" in tallies[0][1] and "Export control" in tallies[1][1]
    restricted_before = rows_of(client.get("/state?as_of=2025-12-07").get_data(as_text=True))
    assert ("US export licensing of Nvidia H200 chips to China", "restricted") in restricted_before


def counts_by_status(counts: list[tuple[str, str, str]]) -> list[tuple[str, int]]:
    return [(status, int(n)) for _, status, n in counts]


def test_state_page_count_links_show_one_status(client) -> None:
    page = get(client, "/state?as_of=2025-12-09")
    link = next(a["href"] for a in page.all("a", class_="count") if "status=eased" in a["href"])
    assert "known_at=" in link and "as_of=2025-12-09" in link
    html = client.get(link).get_data(as_text=True)
    rows = rows_of(html)
    assert rows and {status for _, status in rows} == {"eased"}
    assert "11 rules" in Page(html).text  # the counts stay those of every status


def test_state_page_comes_in_pages_of_one_snapshot(loaded: Tracker) -> None:
    client = create_app({"TESTING": True, "TIMELINE_LIST_PAGE_SIZE": 4}, tracker=loaded).test_client()
    first = get(client, "/state?as_of=2025-12-09")
    first_rows = rows_of(client.get("/state?as_of=2025-12-09").get_data(as_text=True))
    assert len(first_rows) == 4
    assert not first.all("a", rel="prev") and not first.all("a", rel="first")
    # Recorded after the first page: neither shows on the next pages of this listing.
    register(loaded, "zz-late-rule", "A rule registered between pages")
    record(loaded, BILL, kind="ban", effective="2025-06-01", summary="A ban.")
    seen, page, pages = list(first_rows), first, [first_rows]
    while page.all("a", rel="next"):
        link = page.all("a", rel="next")[0]["href"]
        assert "known_at=" in link and "after=" in link
        html = client.get(link).get_data(as_text=True)
        page = Page(html)
        pages.append(rows_of(html))
        seen.extend(pages[-1])
        assert "11 rules" in page.text
    assert [len(rows) for rows in pages] == [4, 4, 3]
    titles = [title for title, _ in seen]
    assert len(set(titles)) == 11 and "A rule registered between pages" not in titles
    def bill(rows: list[tuple[str, str]]) -> str:
        return next(status for title, status in rows if title.startswith("Safe Chips bill"))

    assert bill(seen) == "proposed"
    fresh = create_app({"TESTING": True}, tracker=loaded).test_client()
    assert bill(rows_of(fresh.get("/state?as_of=2025-12-09").get_data(as_text=True))) == "banned"
    # Back from the last page: the same rows as on the way forward.
    back = page.all("a", rel="prev")[0]["href"]
    assert "before=" in back and "known_at=" in back
    assert rows_of(client.get(back).get_data(as_text=True)) == pages[1]
    assert rows_of(client.get(page.all("a", rel="first")[0]["href"]).get_data(as_text=True)) == pages[0]


def test_state_page_filters(client) -> None:
    text = Page(client.get("/state?as_of=2025-12-09&jurisdiction=US").get_data(as_text=True)).text
    assert "4 rules" in text and "China's ban on purchases" not in text


def test_state_csv_download(client) -> None:
    page = get(client, "/state?as_of=2025-12-09")
    link = [a["href"] for a in page.all("a") if a.get("href", "").startswith("/state.csv")][0]
    assert "as_of=2025-12-09" in link and "known_at=" in link  # the vintage the page shows
    response = client.get(link)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    assert "timeline-state-2025-12-09.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 11
    h200 = next(r for r in rows if r["rule_id"] == H200)
    assert (h200["status"], h200["rate_percent"], h200["since"], h200["as_of"]) == (
        "eased", "25.0", "2025-12-08", "2025-12-09")
    # Lists as JSON arrays, the form that reads back exactly (as every download writes them).
    assert json.loads(h200["conditions"]) == [
        "Sales only to approved customers vetted by the US Commerce Department"]
    assert json.loads(h200["targets"]) == ["CN"] and h200["certain"] == "true"
    assert parse_instant(h200["known_at"])


def test_state_csv_link_answers_the_pages_vintage_after_later_records(loaded: Tracker) -> None:
    client = create_app({"TESTING": True}, tracker=loaded).test_client()
    page = get(client, "/state?as_of=2025-12-09&jurisdiction=US")
    link = [a["href"] for a in page.all("a") if a.get("href", "").startswith("/state.csv")][0]
    before = client.get(link).get_data(as_text=True)
    register(loaded, "us-late-rule", "A rule registered later")
    record(loaded, BILL, kind="ban", effective="2025-06-01", summary="A ban.")
    assert client.get(link).get_data(as_text=True) == before
    rows = list(csv.DictReader(io.StringIO(before)))
    assert len(rows) == 4 and {row["jurisdiction"] for row in rows} == {"US"}
    now = list(csv.DictReader(io.StringIO(client.get("/state.csv?as_of=2025-12-09&jurisdiction=US")
                                          .get_data(as_text=True))))
    assert len(now) == 5 and next(r for r in now if r["rule_id"] == BILL)["status"] == "banned"


def test_whole_listings_walk_keyset_pages(loaded: Tracker) -> None:
    """What /state.csv and the CLI stream: every rule (or change), a few at a time, as one list."""
    from datetime import date

    known_at = loaded.known_at()
    day = date(2025, 12, 9)
    assert list(loaded.iter_states(day, known_at, page_size=3)) == states(loaded, day, parse_instant(known_at))
    start = date(2020, 1, 1)
    _, changes = diff(loaded, start, day, parse_instant(known_at))
    assert len(changes) > 2
    assert list(loaded.iter_changes(start, day, known_at, page_size=2)) == changes


def test_csv_keeps_spreadsheet_formulas_inert(tracker: Tracker) -> None:
    register(tracker, "formula-rule", '=HYPERLINK("http://example.invalid","click")')
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    rows = list(csv.DictReader(io.StringIO(client.get("/state.csv").get_data(as_text=True))))
    assert rows[0]["title"] == '\'=HYPERLINK("http://example.invalid","click")'


# What changed -------------------------------------------------------------------------------------


def test_diff_page_shows_before_and_after(client) -> None:
    html = client.get("/diff?from=2024-12-31&to=2025-12-31").get_data(as_text=True)
    text = Page(html).text
    assert "What changed from 31 December 2024 to 31 December 2025" in text
    changes = re.findall(r'<li class="change">(.*?)</li>\n  \n', html, flags=re.S)
    by_title = {re.search(r'<h2 class="change-title"><a [^>]+>([^<]+)</a>', c).group(1).replace("&#39;", "'"): c
                for c in changes}
    assert "China's rare earth embargo on Japan" not in by_title  # unchanged since 2010
    h200 = by_title["US export licensing of Nvidia H200 chips to China"]
    before, after = h200.split('class="side after"')
    assert 'data-status="restricted"' in before and 'data-status="eased"' in after
    assert "25%" in after
    assert "What happened in between" in h200 and "President Donald Trump announced" in h200
    assert f"{len(changes)} rules changed" in text


def test_diff_page_counts_by_status_and_pages_the_changes(site: Tracker) -> None:
    client = create_app({"TESTING": True, "TIMELINE_LIST_PAGE_SIZE": 2}, tracker=site).test_client()
    html = client.get("/diff?from=2024-12-31&to=2025-12-31").get_data(as_text=True)
    total = int(re.search(r"<strong>(\d+)</strong> rules changed", html).group(1))
    assert total >= 3
    tally = re.search(r'<table class="tally diff-tally">(.*?)</table>', html, flags=re.S).group(1)
    rows = re.findall(r'data-status="(\w+)".*?<td class="n">(\d+)</td><td class="n">(\d+)</td>', tally)
    assert sum(int(before) for _, before, _ in rows) == total
    assert sum(int(after) for _, _, after in rows) == total
    assert ("eased" in {s for s, _, after in rows if int(after)})  # the H200 licences
    titles, page = [], Page(html)
    while True:
        shown = re.findall(r'<h2 class="change-title"><a [^>]+>([^<]+)</a>', html)
        assert 1 <= len(shown) <= 2
        titles.extend(shown)
        nexts = page.all("a", rel="next")
        if not nexts:
            break
        assert "known_at=" in nexts[0]["href"] and "after=" in nexts[0]["href"]
        html = client.get(nexts[0]["href"]).get_data(as_text=True)
        page = Page(html)
    assert len(titles) == len(set(titles)) == total
    assert page.all("a", rel="prev")


def test_diff_page_shows_what_happened_in_between_as_known_then(loaded: Tracker) -> None:
    client = create_app({"TESTING": True}, tracker=loaded).test_client()
    page = get(client, "/diff?from=2024-12-31&to=2025-12-31")
    permalink = [a["href"] for a in page.all("a", rel="bookmark")][0]
    assert "President Donald Trump announced" in page.text
    loaded.correct_action(H200, "us-h200-eased-2025-12-08",
                          {"summary": "A corrected account of the easing."}, "Reworded.")
    then = get(client, permalink).text
    assert "President Donald Trump announced" in then
    assert "A corrected account" not in then
    now = get(client, "/diff?from=2024-12-31&to=2025-12-31").text
    assert "A corrected account of the easing." in now


def test_diff_defaults_to_this_year_so_far(client) -> None:
    today = datetime.now(timezone.utc).date()
    page = get(client, "/diff")
    assert page.all("input", name="from")[0]["value"] == f"{today.year - 1}-12-31"
    assert page.all("input", name="to")[0]["value"] in (today.isoformat(), (today + timedelta(days=1)).isoformat())


# Hostile text ---------------------------------------------------------------------------------------


def test_hostile_text_is_always_escaped(tracker: Tracker) -> None:
    register(tracker, "hostile-rule", HOSTILE, subjects=["<b>bold</b>"], tags=["<i>tag</i>"])
    action = record(
        tracker, "hostile-rule", kind="restrict", effective="2025-12-01",
        summary='<img src=x onerror="alert(2)">', conditions=["</li><script>alert(3)</script>"],
        sources=[{"title": "<svg onload=alert(4)>", "publisher": "<u>p</u>",
                  "quote": "\"><script>alert(5)</script>", "url": "https://example.org/?a=<x>&b=\"y\""}],
    )
    tracker.correct_action("hostile-rule", action, {"summary": "<marquee>new</marquee>"}, "<blink>why</blink>")
    client = create_app({"TESTING": True}, tracker=tracker).test_client()
    urls = ["/", "/rules/hostile-rule?as_of=2025-12-02", "/state?as_of=2025-12-02",
            "/diff?from=2025-11-01&to=2025-12-31", "/?q=alert"]
    for url in urls:
        html = client.get(url).get_data(as_text=True)
        for raw in (HOSTILE, "<img src=x", "<script>alert(3)", "<svg onload", "<b>bold", "<i>tag",
                    "<marquee>", "<blink>", "<script>alert(5)", "<u>p</u>"):
            assert raw not in html, (url, raw)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    html = client.get("/rules/hostile-rule?as_of=2025-12-02").get_data(as_text=True)
    assert 'href="https://example.org/?a=%3Cx%3E&amp;b=%22y%22"' in html or \
        'href="https://example.org/?a=&lt;x&gt;&amp;b=&#34;y&#34;"' in html


# The Data page ----------------------------------------------------------------------------------


def downloads(page: Page) -> dict[str, list[dict[str, list[str]]]]:
    """The page's download links by kind, each as its path and parsed query."""
    found: dict[str, list[dict[str, list[str]]]] = {}
    for attrs in page.all("a"):
        if attrs.get("data-download"):
            parts = urlsplit(attrs["href"])
            found.setdefault(attrs["data-download"], []).append(
                {"path": [parts.path], **parse_qs(parts.query)})
    return found


def test_data_page_links_every_download_for_the_filters_pinned_to_its_vintage(client) -> None:
    page = get(client, f"/data?jurisdiction=US&instrument=export_control&rule={H200}&q=chips"
                       "&from=2025-01-01&to=2025-12-31&as_of=2025-12-09")
    vintage = page.all("time", class_="vintage")[0]["datetime"]
    parse_instant(vintage)  # the instant shown, to the microsecond
    links = downloads(page)
    assert set(links) == {"spells", "panel-month", "panel-quarter", "panel-year", "state", "events"}
    filters = {"jurisdiction": ["US"], "instrument": ["export_control"], "rule": [H200],
               "q": ["chips"], "known_at": [vintage]}
    assert sorted(link["format"][0] for link in links["spells"]) == ["csv", "jsonl"]
    for link in links["spells"]:
        assert link["path"] == ["/api/v1/spells"] and filters.items() <= link.items()
    for every in ("month", "quarter", "year"):
        assert sorted(link["format"][0] for link in links[f"panel-{every}"]) == ["csv", "jsonl"]
        for link in links[f"panel-{every}"]:
            assert link["path"] == ["/api/v1/panel"] and filters.items() <= link.items()
            assert (link["every"], link["from"], link["to"]) == (
                [every], ["2025-01-01"], ["2025-12-31"])
    (state,) = links["state"]
    assert state["path"] == ["/state.csv"] and state["as_of"] == ["2025-12-09"]
    assert state["known_at"] == [vintage] and state["jurisdiction"] == ["US"]
    (events,) = links["events"]
    assert events["path"] == ["/api/v1/events"] and events["after"] == ["0"]
    assert events["rule"] == [H200]
    # How to publish this vintage as a database, and read it from pandas or R.
    assert f"timeline publish timeline-{vintage[:10]}.db --known-at {vintage}" in page.text
    assert "datasette timeline-" in page.text and "pd.read_csv(" in page.text
    assert "read.csv(" in page.text


def test_data_page_answers_for_the_known_at_asked_and_its_links_answer_the_same(client) -> None:
    asked = get(client, "/data").all("time", class_="vintage")[0]["datetime"]
    page = get(client, f"/data?known_at={asked}&as_of=2025-12-09")
    assert page.all("time", class_="vintage")[0]["datetime"] == asked
    links = downloads(page)
    assert all(link["known_at"] == [asked] for kind in ("spells", "panel-month", "state")
               for link in links[kind])
    (state,) = links["state"]
    response = client.get(state["path"][0] + "?" + urlsplit(
        next(a["href"] for a in page.all("a") if a.get("data-download") == "state")).query)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert rows and {row["known_at"] for row in rows} == {asked}
    events = client.get(next(a["href"] for a in page.all("a") if a.get("data-download") == "events"))
    assert events.status_code == 200 and events.get_json()["events"]


def test_data_page_form_works_without_javascript_and_is_in_the_navigation(client) -> None:
    page = get(client, "/data")
    (form,) = page.all("form")
    assert form["method"] == "get" and form["action"] == "/data"
    names = {a["name"] for t, a in page.elements if t in ("input", "select") and a.get("name")}
    assert {"jurisdiction", "instrument", "rule", "q", "from", "to", "as_of", "known_at"} <= names
    for url in ("/", "/state", f"/rules/{H200}"):
        nav = [a["href"] for a in get(client, url).all("a") if urlsplit(a["href"]).path == "/data"]
        assert nav, url
    kept = get(client, "/state?known_at=2025-12-10T00:00:00Z")
    assert "/data?known_at=2025-12-10T00:00:00Z" in [a["href"] for a in kept.all("a")]


@pytest.mark.parametrize("url, field", [
    ("/data?from=2025-02-01&to=2025-01-01", "from"),
    ("/data?rule=Not+A+Rule", "rule"),
    ("/data?known_at=yesterday", "known_at"),
    ("/data?jurisdiction=XX", "jurisdiction"),
    ("/data?as_of=2025-02-30", "as_of"),
])
def test_data_page_bad_parameters_answer_400_naming_the_field(client, url: str, field: str) -> None:
    page = get(client, url, status=400)
    assert page.heading("h1") == "Bad request"
    assert f"{field}:" in page.text

