"""The feed as Atom, archived by RFC 5005: a current document and archive pages that never change.

Archive page ``n`` holds the events with positions in ``((n - 1) * size, n * size]``. It is
published once the head reaches ``n * size``: every smaller position is settled by then (writes
commit in position order), so the page is final. The current document holds the newest
``size`` positions and links to the newest archive page with ``prev-archive``; an entry may be
in both, and a reader keeps one copy per ``atom:id`` (RFC 5005, section 4).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator

from timeline.feed.cloudevents import to_cloudevent
from timeline.feed.filters import EventFilter

PAGE_SIZE = 50
HISTORY_NS = "http://purl.org/syndication/history/1.0"
# Entry ids are name-based UUIDs in this namespace: stable for an event wherever it is served.
_ENTRY_NAMESPACE = uuid.UUID("6d3c1f0e-8a4b-5c2e-9f71-2b0d4e6a8c13")
_EMPTY_FEED_UPDATED = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _ArchiveMark(BaseExtension):
    """Adds ``<fh:archive/>``, which marks a document as an archive (RFC 5005, section 4)."""

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS}

    def extend_atom(self, feed: Any) -> Any:
        from lxml import etree

        etree.SubElement(feed, f"{{{HISTORY_NS}}}archive")
        return feed


def archive_count(head: int, size: int = PAGE_SIZE) -> int:
    """How many archive pages are final at this head."""
    return head // size


def entry_id(cloudevent: dict[str, Any]) -> str:
    return "urn:uuid:" + str(uuid.uuid5(_ENTRY_NAMESPACE, cloudevent["id"]))


def _title(ce: dict[str, Any]) -> str:
    data, rule = ce["data"], ce["subject"]
    kind = ce["type"]
    if kind == "timeline.rule.registered":
        return f"Rule registered: {data.get('title', rule)}"
    if kind == "timeline.action.recorded":
        rate = f" at {data['rate_percent']:g}%" if data.get("rate_percent") is not None else ""
        return f"{rule}: {data.get('kind')}{rate} effective {data.get('effective')}"
    if kind == "timeline.action.corrected":
        return f"{rule}: action {data.get('action_id')} corrected"
    return f"{rule}: action {data.get('action_id')} retracted"


def _summary(ce: dict[str, Any]) -> str:
    data = ce["data"]
    kind = ce["type"]
    if kind == "timeline.rule.registered":
        return f"{data.get('jurisdiction')} {data.get('instrument')}: {data.get('title')}"
    if kind == "timeline.action.recorded":
        return data.get("summary") or f"{data.get('kind')} effective {data.get('effective')}"
    if kind == "timeline.action.corrected":
        fields = ", ".join(sorted(data.get("changes", {})))
        return f"Corrected {fields}: {data.get('reason')}"
    return f"Retracted: {data.get('reason')}"


def _document(
    rows: list[tuple[int, Any]], base_url: str, self_href: str, links: list[tuple[str, str]],
    archive: bool,
) -> bytes:
    fg = FeedGenerator()
    if archive:
        fg.register_extension("fh", _ArchiveMark, atom=True, rss=False)
    fg.id(base_url + "feed.atom")
    fg.title("timeline: recorded policy events")
    fg.subtitle("Every rule registered, action recorded, corrected or retracted, newest first.")
    fg.author({"name": "timeline"})
    fg.link(href=self_href, rel="self", type="application/atom+xml")
    fg.link(href=base_url, rel="alternate", type="text/html")
    for rel, href in links:
        fg.link(href=href, rel=rel, type="application/atom+xml")
    cloudevents = [to_cloudevent(position, event) for position, event in rows]
    newest = _EMPTY_FEED_UPDATED
    for ce in cloudevents:  # oldest first; each is put in front, so the newest ends up on top
        updated = datetime.fromisoformat(ce["time"].replace("Z", "+00:00"))
        newest = max(newest, updated)
        entry = fg.add_entry(order="prepend")
        entry.id(entry_id(ce))
        entry.title(_title(ce))
        entry.link(href=f"{base_url}rules/{ce['subject']}", rel="alternate", type="text/html")
        entry.updated(updated)
        entry.published(updated)
        entry.category(term=ce["type"], label=ce["type"])
        entry.summary(_summary(ce))
    fg.updated(newest)
    return fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)


def _matching(tracker: Any, rows: list[tuple[int, Any]], wanted: EventFilter) -> list[tuple[int, Any]]:
    return wanted.select(rows, tracker.rule_facets if wanted.needs_facets else None)


def current_document(tracker: Any, base_url: str, size: int = PAGE_SIZE,
                     wanted: EventFilter = EventFilter()) -> bytes:
    """The newest events, linking to the newest final archive page.

    Filtered, each document holds the matching events of the same positions as unfiltered, so
    the archive pages still cover every position once (some hold few events, or none)."""
    head = tracker.head()
    rows = tracker.events_after(max(0, head - size), size)
    rows = _matching(tracker, [row for row in rows if row[0] <= head], wanted)
    current = base_url + "feed.atom" + wanted.query()
    links = [("current", current)]
    archives = archive_count(head, size)
    if archives:
        links.append(("prev-archive", archive_href(base_url, archives, wanted)))
    return _document(rows, base_url, current, links, archive=False)


def archive_href(base_url: str, number: int, wanted: EventFilter = EventFilter()) -> str:
    return f"{base_url}feed/archive/{number}.atom" + wanted.query()


def archive_document(tracker: Any, base_url: str, number: int, size: int = PAGE_SIZE,
                     wanted: EventFilter = EventFilter()) -> bytes | None:
    """Archive page ``number`` (from 1), or None while it is not final yet."""
    if number < 1 or number > archive_count(tracker.head(), size):
        return None
    start = (number - 1) * size
    rows = [row for row in tracker.events_after(start, size) if row[0] <= start + size]
    rows = _matching(tracker, rows, wanted)
    # Only links that never change: the current document and the older page.
    links = [("current", base_url + "feed.atom" + wanted.query())]
    if number > 1:
        links.append(("prev-archive", archive_href(base_url, number - 1, wanted)))
    return _document(rows, base_url, archive_href(base_url, number, wanted), links, archive=True)
