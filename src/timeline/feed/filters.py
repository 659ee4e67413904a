"""Which feed events a consumer asked for: ``rule``, ``jurisdiction`` and ``instrument``.

An event matches when it matches every filter given; within one filter, any of its values
(repeat the parameter, or separate values with commas). An event's rule is its subject; the
rule's jurisdiction and instrument come from the read model's ``rules`` table, and never change
once registered, so each process keeps them once looked up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from timeline.feed.paging import BadFeedParameter
from timeline.schemas import INSTRUMENTS, JURISDICTIONS

FILTER_PARAMETERS = ("rule", "jurisdiction", "instrument")


@dataclass(frozen=True)
class Facets:
    """What a filter can ask of an event's rule."""

    jurisdiction: str
    instrument: str


@dataclass(frozen=True)
class EventFilter:
    rules: frozenset[str] = frozenset()
    jurisdictions: frozenset[str] = frozenset()
    instruments: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.rules or self.jurisdictions or self.instruments)

    @property
    def needs_facets(self) -> bool:
        return bool(self.jurisdictions or self.instruments)

    def matches(self, rule_id: str, facets: Facets | None) -> bool:
        if self.rules and rule_id not in self.rules:
            return False
        if not self.needs_facets:
            return True
        if facets is None:
            return False
        if self.jurisdictions and facets.jurisdiction not in self.jurisdictions:
            return False
        return not self.instruments or facets.instrument in self.instruments


def _values(args: Mapping[str, Sequence[str]], name: str) -> frozenset[str]:
    return frozenset(v.strip() for raw in args.get(name, ()) for v in raw.split(",") if v.strip())


def parse_event_filter(args: Mapping[str, Sequence[str]]) -> EventFilter:
    """The filter from query parameters (name -> every value given); unknown codes are 400."""
    wanted = EventFilter(_values(args, "rule"), _values(args, "jurisdiction"),
                         _values(args, "instrument"))
    unknown = sorted(wanted.jurisdictions - JURISDICTIONS)
    if unknown:
        raise BadFeedParameter(
            f"jurisdiction must be ISO 3166-1 alpha-2 codes or EU, not {', '.join(unknown)}.",
            {"jurisdiction": "must be ISO 3166-1 alpha-2 codes or EU"},
        )
    unknown = sorted(wanted.instruments - set(INSTRUMENTS))
    if unknown:
        raise BadFeedParameter(
            f"instrument must be one of {', '.join(INSTRUMENTS)}, not {', '.join(unknown)}.",
            {"instrument": "must be one of " + ", ".join(INSTRUMENTS)},
        )
    return wanted


class RuleFacets:
    """Rule id -> its jurisdiction and instrument, from the read model, remembered per process."""

    def __init__(self, tracker: Any):
        self._tracker = tracker
        self._known: dict[str, Facets] = {}
        self._lock = threading.Lock()

    def known(self, rule_id: str) -> Facets | None:
        """The facets if already looked up (no reading)."""
        return self._known.get(rule_id)

    def of(self, rule_id: str) -> Facets | None:
        facets = self._known.get(rule_id)
        if facets is None:
            facets = self._look_up(rule_id)
        return facets

    def _look_up(self, rule_id: str) -> Facets | None:
        # The event being filtered is stored, so its rule's registration is too: catching the
        # read model up to the store's head (known_at does) makes the row be there.
        self._tracker.known_at()
        row = self._tracker.readmodel.connection().execute(
            "SELECT jurisdiction, instrument FROM rules WHERE id = ?", (rule_id,)
        ).fetchone()
        if row is None:
            return None
        facets = Facets(row[0], row[1])
        with self._lock:
            self._known[rule_id] = facets
        return facets


def keeps(wanted: EventFilter, facets: Callable[[str], Facets | None]) -> Callable[[Any], bool]:
    """Whether a stored event passes ``wanted`` (an event's rule is its originator)."""

    def keep(event: Any) -> bool:
        rule_id = event.originator_id
        return wanted.matches(rule_id, facets(rule_id) if wanted.needs_facets else None)

    return keep
