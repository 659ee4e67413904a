"""The pages in headless Chromium (Debian's), driven by Playwright: as a reader uses them.

Screenshots of every page at 1280 and 375 px wide go to artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Iterator

import pytest

from timeline.config import Settings
from timeline.fixtures import bundled_fixtures, load_fixtures
from timeline.service import Tracker
from timeline.web import create_app

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
H200 = "us-h200-export-licensing-cn"
WIDTHS = (1280, 375)
PAGES = {
    "timeline": "/",
    "rule-h200": f"/rules/{H200}?as_of=2025-12-09",
    "rule-tariff": "/rules/us-fentanyl-tariff-cn?as_of=2025-10-15",
    "rule-history": f"/rules/{H200}/history",
    "state": "/state?as_of=2025-12-09",
    "diff-2025": "/diff?from=2024-12-31&to=2025-12-31",
    "data": "/data?jurisdiction=US&from=2025-01-01&to=2025-12-31",
    "not-found": "/rules/no-such-rule",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                       "/usr/bin/chromium (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the bundled fixtures, served on a free loopback port for this module."""
    yield from _serve(tmp_path_factory, {})


@pytest.fixture(scope="module")
def small_pages_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same, with four rules or changes on a page of /state and /diff."""
    yield from _serve(tmp_path_factory, {"TIMELINE_LIST_PAGE_SIZE": 4})


def _serve(tmp_path_factory: pytest.TempPathFactory, config: dict) -> Iterator[str]:
    from werkzeug.serving import make_server

    tracker = Tracker(Settings(home=tmp_path_factory.mktemp("browser-home")))
    load_fixtures(tracker, bundled_fixtures())
    server = make_server("127.0.0.1", 0, create_app({"TESTING": True, **config}, tracker=tracker),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        tracker.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


class Problems:
    """Console errors, uncaught exceptions and failed requests seen by one page."""

    def __init__(self, page, base_url: str, document_status: int = 200):
        self.items: list[str] = []

        def console(m) -> None:
            # Chromium reports a document answered with 404 as a console error; on the page
            # that is meant to be a 404, that one message is expected.
            expected = (document_status == 404 and "404" in m.text
                        and m.location.get("url") == page.url)
            if m.type == "error" and not expected:
                self.items.append(f"console: {m.text}")

        page.on("console", console)
        page.on("pageerror", lambda e: self.items.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.items.append(f"request failed: {r.url}"))

        def response(r) -> None:
            if not r.url.startswith(base_url):
                self.items.append(f"outside request: {r.url}")
            elif r.status >= 400 and r.request.resource_type != "document":
                self.items.append(f"{r.status}: {r.url}")

        page.on("response", response)


@pytest.fixture
def page(browser, base_url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = Problems(page, base_url)
    yield page
    context.close()


def shown_status(page) -> str:
    return page.locator(".state-main .badge").get_attribute("data-status")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_page_loads_cleanly_fits_the_screen_and_is_saved(browser, base_url: str, name: str, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    status = 404 if name == "not-found" else 200
    problems = Problems(page, base_url, document_status=status)
    try:
        response = page.goto(base_url + PAGES[name])
        assert response.status == status
        page.wait_for_load_state("load")
        assert page.title().endswith("· timeline")
        assert page.locator("h1").count() == 1 and page.locator("h1").is_visible()
        # Nothing sticks out sideways: no horizontal scrolling at either width.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        assert problems.items == []
    finally:
        context.close()


def test_moving_the_as_of_picker_moves_the_state_and_the_chart(page, base_url: str) -> None:
    page.goto(f"{base_url}/rules/{H200}?as_of=2025-12-01")
    assert shown_status(page) == "restricted"
    assert page.locator(".chart-svg").is_visible()

    # Picking a day submits the form by itself (app.js); no button press.
    for day, status, label in (("2025-12-07", "restricted", "Shown: 7 Dec 2025"),
                               ("2025-12-08", "eased", "Shown: 8 Dec 2025"),
                               ("2025-12-31", "eased", "Shown: 31 Dec 2025")):
        with page.expect_navigation():
            page.fill("input[name=as_of]", day)
        assert f"as_of={day}" in page.url
        assert "known_at=" not in page.url  # empty fields stay out of the address
        assert shown_status(page) == status
        assert page.locator(".state-main .badge").inner_text().lower() == status
        assert page.locator(".band.current").get_attribute("data-status") == status
        assert page.locator(".as-of-label").text_content() == label
    assert "25%" in page.locator(".state-main").inner_text()
    # The keyboard stays on the picker across the reloads.
    assert page.evaluate("document.activeElement.name") == "as_of"
    assert page.problems.items == []


def test_the_as_of_form_works_without_javascript(browser, base_url: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{base_url}/rules/{H200}?as_of=2025-12-07")
        assert shown_status(page) == "restricted"
        page.fill("input[name=as_of]", "2025-12-08")
        with page.expect_navigation():
            page.click("form.when button[type=submit]")
        assert shown_status(page) == "eased"
        assert "as_of=2025-12-08" in page.url
    finally:
        context.close()


def test_the_state_page_filters_and_pages_without_javascript(browser, small_pages_url: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()

    def statuses() -> list[str]:
        return [badge.get_attribute("data-status")
                for badge in page.locator(".state-table .rule-state .badge").all()]

    def titles() -> list[str]:
        return page.locator(".state-table a.rule-title").all_inner_texts()

    try:
        page.goto(f"{small_pages_url}/state?as_of=2025-12-09")
        seen = titles()
        assert len(seen) == 4
        while page.locator("a[rel=next]").count():
            with page.expect_navigation():
                page.click("a[rel=next]")
            assert "known_at=" in page.url
            seen += titles()
        assert len(seen) == len(set(seen)) == 11
        with page.expect_navigation():
            page.click("a[rel=first]")
        assert len(titles()) == 4 and titles() == seen[:4]
        page.select_option("select#status", "eased")
        with page.expect_navigation():
            page.click("form.filters button[type=submit]")
        assert "status=eased" in page.url
        assert statuses() and set(statuses()) == {"eased"}
        assert "US export licensing of Nvidia H200 chips to China" in titles()
    finally:
        context.close()


def test_the_diff_page_pages_its_changes_without_javascript(browser, small_pages_url: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{small_pages_url}/diff?from=2019-12-31&to=2025-12-31")
        total = int(page.locator(".summary-bar .total strong").inner_text())
        assert total > 4
        assert page.locator(".diff-tally tbody tr").count() >= 2
        seen = page.locator(".change-title a").all_inner_texts()
        while page.locator("a[rel=next]").count():
            with page.expect_navigation():
                page.click("a[rel=next]")
            seen += page.locator(".change-title a").all_inner_texts()
        assert len(seen) == len(set(seen)) == total
    finally:
        context.close()


def test_chart_bands_lead_to_their_day(page, base_url: str) -> None:
    page.goto(f"{base_url}/rules/{H200}?as_of=2025-12-09")
    with page.expect_navigation():
        page.locator("a.band-link", has=page.locator(".band.status-restricted")).click()
    assert "as_of=2022-01-01" in page.url
    assert shown_status(page) == "restricted"


def test_keyboard_reaches_the_content_and_the_picker(page, base_url: str) -> None:
    page.goto(f"{base_url}/rules/{H200}?as_of=2025-12-09")
    page.keyboard.press("Tab")
    skip = page.evaluate("[document.activeElement.textContent, document.activeElement.getBoundingClientRect().top]")
    assert skip[0] == "Skip to content" and skip[1] >= 0  # visible when focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "as_of":
            break
    else:
        pytest.fail("the as_of picker cannot be reached with the keyboard")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


CONTRAST_SCRIPT = """
() => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : [...m, 1]; };
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                                   .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c[3] > 0.5) return c;
    }
    return [255, 255, 255, 1];
  };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest('svg')) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || box.width === 0 || box.height === 0) continue;
    const fg = parse(style.color), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
    if (ratio < needed) failures.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className}: ${node.textContent.trim().slice(0, 40)}`);
  }
  return failures;
}
"""


@pytest.mark.parametrize("name", ["timeline", "rule-h200", "rule-history", "state", "diff-2025", "data"])
def test_text_has_sufficient_contrast(page, base_url: str, name: str) -> None:
    page.goto(base_url + PAGES[name])
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate(CONTRAST_SCRIPT) == []


def test_timeline_filters_and_pages_in_the_browser(page, base_url: str) -> None:
    page.goto(base_url + "/")
    page.select_option("select#kind", "ease")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert re.search(r"[?&]kind=ease", page.url)
    kinds = page.locator(".entry .badge[data-kind]").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds and set(kinds) == {"ease"}
    with page.expect_navigation():
        page.click("a:text('US export licensing of Nvidia H200 chips to China')")
    assert page.locator("h1").inner_text() == "US export licensing of Nvidia H200 chips to China"


def test_the_data_page_without_javascript_pins_its_downloads(browser, base_url: str) -> None:
    context = browser.new_context(java_script_enabled=False, accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(f"{base_url}/data")
        page.select_option("select#jurisdiction", "US")
        page.fill("input#rule", H200)
        page.fill("input#as_of", "2025-12-09")
        with page.expect_navigation():
            page.click("form.filters button[type=submit]")
        assert "jurisdiction=US" in page.url and f"rule={H200}" in page.url
        vintage = page.locator("time.vintage").get_attribute("datetime")
        hrefs = page.locator("a[data-download]").evaluate_all("els => els.map(e => e.href)")
        assert len(hrefs) == 10
        assert all(f"rule={H200}" in href for href in hrefs if "/state.csv" not in href)
        assert all("known_at=" in href for href in hrefs if "/api/v1/events" not in href)
        with page.expect_download() as download:
            page.click("a[data-download=state]")
        text = Path(download.value.path()).read_text(encoding="utf-8")
        assert text.startswith("rule_id,") and vintage in text
    finally:
        context.close()

