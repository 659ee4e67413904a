"""GET /feed.atom: an RFC 5005 archived Atom feed whose entries link to their rule pages."""

from __future__ import annotations

from lxml import etree

from timeline.feed import atom

from feed_support import make_app, record

ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"


def parse(response) -> etree._Element:
    assert response.status_code == 200
    assert response.mimetype == "application/atom+xml"
    return etree.fromstring(response.data)  # raises on anything that is not well-formed XML


def links(root: etree._Element) -> dict[str, str]:
    return {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}


def entry_ids(root: etree._Element) -> list[str]:
    return [entry.findtext(f"{ATOM}id") for entry in root.findall(f"{ATOM}entry")]


def test_the_current_document_is_atom_with_the_newest_events_first(loaded):
    client = make_app(loaded).test_client()
    root = parse(client.get("/feed.atom"))
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == "http://localhost/feed.atom"
    assert links(root)["self"] == "http://localhost/feed.atom"
    assert links(root)["current"] == "http://localhost/feed.atom"
    assert root.find(f"{FH}archive") is None
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == loaded.head()  # fewer than a page: all of them
    updated = [entry.findtext(f"{ATOM}updated") for entry in entries]
    assert updated == sorted(updated, reverse=True)
    assert root.findtext(f"{ATOM}updated") == updated[0]
    feed = client.get("/api/v1/events").get_json()["events"]
    newest = feed[-1]
    assert entries[0].find(f"{ATOM}category").get("term") == newest["type"]
    assert len(set(entry_ids(root))) == len(entries)


def test_each_entry_links_to_its_rule_page(loaded):
    root = parse(make_app(loaded).test_client().get("/feed.atom"))
    feed = {e["subject"] for e in make_app(loaded).test_client().get("/api/v1/events").get_json()["events"]}
    hrefs = set()
    for entry in root.findall(f"{ATOM}entry"):
        link = entry.find(f"{ATOM}link")
        assert link.get("rel", "alternate") == "alternate"  # Atom's default relation
        assert link.get("href").startswith("http://localhost/rules/")
        hrefs.add(link.get("href").removeprefix("http://localhost/rules/"))
        assert entry.findtext(f"{ATOM}title")
    assert hrefs == feed


def test_archive_pages_hold_every_older_event_once_and_never_change(loaded):
    record(loaded, "us-safe-chips-bill", 20)  # 46 events; pages of 10
    client = make_app(loaded, TIMELINE_ATOM_PAGE_SIZE=10).test_client()
    current = parse(client.get("/feed.atom"))
    assert len(current.findall(f"{ATOM}entry")) == 10
    assert links(current)["prev-archive"] == "http://localhost/feed/archive/4.atom"

    # Walk back through the archive, as RFC 5005 readers do.
    collected: list[str] = []
    href = links(current).get("prev-archive")
    pages = []
    while href:
        response = client.get(href.removeprefix("http://localhost"))
        page = parse(response)
        assert page.find(f"{FH}archive") is not None
        assert "immutable" in response.headers["Cache-Control"]
        assert links(page)["current"] == "http://localhost/feed.atom"
        assert links(page)["self"] == href
        pages.append(href)
        collected.extend(entry_ids(page))
        href = links(page).get("prev-archive")
    assert pages == [f"http://localhost/feed/archive/{n}.atom" for n in (4, 3, 2, 1)]
    assert len(collected) == 40 == len(set(collected))

    # The current document and the archives together hold every event; overlaps are the same entries.
    everything = set(collected) | set(entry_ids(current))
    assert len(everything) == loaded.head() == 46

    before = client.get("/feed/archive/2.atom").data
    record(loaded, "us-safe-chips-bill", 15)
    assert client.get("/feed/archive/2.atom").data == before
    assert links(parse(client.get("/feed.atom")))["prev-archive"].endswith("/feed/archive/6.atom")


def test_an_unfinished_archive_page_is_not_there_yet(loaded):
    client = make_app(loaded, TIMELINE_ATOM_PAGE_SIZE=10).test_client()
    assert client.get("/feed/archive/2.atom").status_code == 200
    missing = client.get("/feed/archive/3.atom")  # positions 21-30: only 26 events so far
    assert missing.status_code == 404
    assert missing.mimetype == "text/html"
    assert client.get("/feed/archive/0.atom").status_code == 404


def test_the_current_document_revalidates_with_its_etag(loaded):
    client = make_app(loaded).test_client()
    first = client.get("/feed.atom")
    assert first.headers["Cache-Control"] == "no-cache"
    assert client.get("/feed.atom", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    record(loaded, "us-safe-chips-bill", 1)
    assert client.get("/feed.atom", headers={"If-None-Match": first.headers["ETag"]}).status_code == 200


def test_an_empty_store_has_a_valid_empty_feed(app):
    root = parse(app.test_client().get("/feed.atom"))
    assert root.findall(f"{ATOM}entry") == []
    assert "prev-archive" not in links(root)


def test_a_filtered_feed_walks_back_through_every_matching_event_once(loaded):
    record(loaded, "us-safe-chips-bill", 20)
    client = make_app(loaded, TIMELINE_ATOM_PAGE_SIZE=10).test_client()
    matching = client.get("/api/v1/events?limit=1000&jurisdiction=US").get_json()["events"]
    everything = client.get("/api/v1/events?limit=1000").get_json()["events"]
    assert 0 < len(matching) < len(everything)

    current = parse(client.get("/feed.atom?jurisdiction=US"))
    assert links(current)["self"] == "http://localhost/feed.atom?jurisdiction=US"
    collected = entry_ids(current)
    href = links(current).get("prev-archive")
    assert href == "http://localhost/feed/archive/4.atom?jurisdiction=US"
    while href:
        page = parse(client.get(href.removeprefix("http://localhost")))
        assert links(page)["current"] == "http://localhost/feed.atom?jurisdiction=US"
        collected.extend(entry_ids(page))
        href = links(page).get("prev-archive")
    # The current document overlaps the newest archive page: the same entries, once each.
    assert set(collected) == {atom.entry_id(event) for event in matching}
    bad = client.get("/feed.atom?jurisdiction=XX")
    assert bad.status_code == 422
