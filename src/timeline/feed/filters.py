"""Which events a consumer asked for: one predicate for the paged feed, Atom, webhooks and the
live stream.

An event matches when it matches every filter given (types, rules, jurisdictions, instruments);
within one filter, any of the values given. The rule of an event is its subject; a rule's
jurisdiction and instrument are fixed at its registration, so they are looked up by rule id
(``facets``) only when a filter asks for them, and a process may keep them once looked up
(:class:`RuleFacets`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode

from timeline.domain.errors import InvalidInput
from timeline.events import EVENT_TYPES, event_type
from timeline.schemas import INSTRUMENTS, JURISDICTIONS, RULE_ID

# rule ids -> {rule id: (jurisdiction, instrument)}, for the rules that exist
Facets = Callable[[Iterable[str]], Mapping[str, tuple[str, str]]]


class UnknownRule(LookupError):
    """An event's rule is not in the read model yet; the caller looks again later."""


def _check(values: Sequence[str], valid: Callable[[str], bool], message: str) -> str | None:
    wrong = [v for v in values if not valid(v)]
    return f"{wrong[0]!r} {message}" if wrong else None


@dataclass(frozen=True)
class EventFilter:
    types: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    jurisdictions: frozenset[str] = frozenset()
    instruments: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, types: Iterable[str] = (), rules: Iterable[str] = (),
           jurisdictions: Iterable[str] = (), instruments: Iterable[str] = (),
           names: Mapping[str, str] | None = None) -> EventFilter:
        """A filter from lists of values, checked as the rest of the API checks codes.

        ``names`` gives the field name each list is reported under (``rules`` or ``rule``).
        Raises :class:`InvalidInput` (422) naming every bad field.
        """
        names = {"types": "types", "rules": "rules", "jurisdictions": "jurisdictions",
                 "instruments": "instruments", **(names or {})}
        given = {"types": list(types), "rules": list(rules),
                 "jurisdictions": list(jurisdictions), "instruments": list(instruments)}
        checks = {
            "types": (lambda v: v in EVENT_TYPES, "is not an event type"),
            "rules": (lambda v: RULE_ID.fullmatch(v) is not None, "is not a rule id"),
            "jurisdictions": (lambda v: v in JURISDICTIONS, "is not an ISO 3166-1 alpha-2 code or EU"),
            "instruments": (lambda v: v in INSTRUMENTS, "is not an instrument"),
        }
        errors = {}
        for key, (valid, message) in checks.items():
            problem = _check(given[key], valid, message)
            if problem:
                errors[names[key]] = problem
        if errors:
            raise InvalidInput("Some filters are not valid: " + "; ".join(
                f"{k}: {v}" for k, v in errors.items()), errors)
        return cls(*(frozenset(given[key]) for key in ("types", "rules", "jurisdictions", "instruments")))

    @classmethod
    def from_query(cls, args: Any) -> EventFilter:
        """From query parameters ``type``, ``rule``, ``jurisdiction``, ``instrument`` (each may
        be repeated, or hold values separated by commas): a request's ``args``, or a mapping of
        names to the list of values given (``urllib.parse.parse_qs``)."""
        def values(name: str) -> list[str]:
            given = args.getlist(name) if hasattr(args, "getlist") else args.get(name, ())
            return [v.strip() for item in given for v in item.split(",") if v.strip()]

        return cls.of(types=values("type"), rules=values("rule"),
                      jurisdictions=values("jurisdiction"), instruments=values("instrument"),
                      names={"types": "type", "rules": "rule", "jurisdictions": "jurisdiction",
                             "instruments": "instrument"})

    @property
    def everything(self) -> bool:
        return not (self.types or self.rules or self.jurisdictions or self.instruments)

    @property
    def needs_facets(self) -> bool:
        return bool(self.jurisdictions or self.instruments)

    def matches(self, type_: str, rule_id: str, facets: tuple[str, str] | None = None) -> bool:
        """Whether an event of this type on this rule (with its jurisdiction and instrument,
        when the filter needs them) is wanted."""
        if self.types and type_ not in self.types:
            return False
        if self.rules and rule_id not in self.rules:
            return False
        if self.needs_facets:
            if facets is None:
                raise UnknownRule(rule_id)
            jurisdiction, instrument = facets
            if self.jurisdictions and jurisdiction not in self.jurisdictions:
                return False
            if self.instruments and instrument not in self.instruments:
                return False
        return True

    def select(self, rows: Sequence[tuple[int, Any]], facets: Facets | None) -> list[tuple[int, Any]]:
        """The ``(position, event)`` rows that match, in their order."""
        if self.everything:
            return list(rows)
        found: Mapping[str, tuple[str, str]] = {}
        if self.needs_facets:
            if facets is None:
                raise ValueError("this filter needs the rules' jurisdictions and instruments")
            found = facets({event.originator_id for _, event in rows})
        return [(position, event) for position, event in rows
                if self.matches(event_type(event), event.originator_id, found.get(event.originator_id))]

    def query(self) -> str:
        """The filter as a query string for links (``?rule=...``), empty for no filter."""
        pairs = [(name, value) for name, values in (
            ("rule", self.rules), ("jurisdiction", self.jurisdictions),
            ("instrument", self.instruments), ("type", self.types)) for value in sorted(values)]
        return "?" + urlencode(pairs) if pairs else ""

    def public(self) -> dict[str, list[str]]:
        return {"types": sorted(self.types), "rules": sorted(self.rules),
                "jurisdictions": sorted(self.jurisdictions), "instruments": sorted(self.instruments)}


class RuleFacets:
    """Rule id -> its jurisdiction and instrument, looked up through the tracker once per rule
    and remembered (they never change once registered), for streams that filter on them."""

    def __init__(self, tracker: Any):
        self._tracker = tracker
        self._known: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def known(self, rule_id: str) -> tuple[str, str] | None:
        """The facets if already looked up (no reading)."""
        return self._known.get(rule_id)

    def of(self, rule_id: str) -> tuple[str, str] | None:
        facets = self._known.get(rule_id)
        if facets is None:
            # The event being filtered is stored, so its rule's registration is too: the
            # tracker catches its read model up before it answers.
            facets = self._tracker.rule_facets([rule_id]).get(rule_id)
            if facets is not None:
                with self._lock:
                    self._known[rule_id] = facets
        return facets


def keeps(wanted: EventFilter, facets: Callable[[str], tuple[str, str] | None],
          ) -> Callable[[Any], bool]:
    """Whether a stored event passes ``wanted`` (an event's rule is its originator)."""

    def keep(event: Any) -> bool:
        rule_id = event.originator_id
        try:
            return wanted.matches(event_type(event), rule_id,
                                  facets(rule_id) if wanted.needs_facets else None)
        except UnknownRule:
            return False

    return keep
