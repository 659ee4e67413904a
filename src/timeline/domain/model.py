"""The Rule aggregate: registration, one event per kind of action, corrections, retractions.

Every command validates before it triggers an event, so an invalid command records nothing.
Record time is given by the caller (the application's clock), never taken here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import (
    BaseAggregate, CanInitAggregate, CanMutateAggregate, CanSnapshotAggregate, MetaDomainEvent,
)

from timeline.domain.dates import PolicyDate
from timeline.domain.errors import Conflict, InvalidInput, NotFound
from timeline.domain.fold import Action
from timeline.domain.kinds import (
    BY_NAME, CORRECTABLE, apply_correction, check_action_fields, checked_fields, unchecked,
)

RULE_FIELDS = ("title", "jurisdiction", "instrument", "targets", "subjects", "tags", "links")


def fingerprint(value: Any) -> str:
    """A stable hash of a JSON-like value, to tell a repeat from a different request."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# What a rule keeps of each action, by id: a short list, as a snapshot of a rule with thousands
# of actions holds one each: the version of the event that recorded it, whether it was
# retracted, its fingerprint, then what checked_fields keeps (from CHECKED on).
VERSION, RETRACTED, FINGERPRINT, CHECKED = 0, 1, 2, 3


def action_fingerprint(action: dict[str, Any]) -> str:
    """An action's fingerprint as a rule keeps it: 64 bits tell a repeated request from another
    with the same id as well as 256, in a quarter of a snapshot's room."""
    return fingerprint(action)[:16]


def _kept(fields: dict[str, Any]) -> list:
    """:func:`checked_fields` as the rule keeps them (a list, as its snapshots store it)."""
    return [[] if value == () else value for value in checked_fields(fields)]


def to_fold_action(fields: dict[str, Any], order: int) -> Action:
    conditions = fields.get("conditions")
    until = fields.get("until")
    return Action(id=fields["id"], kind=fields["kind"],
                  effective=PolicyDate.parse(fields["effective"]), order=order,
                  rate_percent=fields.get("rate_percent"),
                  until=PolicyDate.parse(until) if until else None,
                  conditions=tuple(conditions) if conditions is not None else None)


class Rule(BaseAggregate[str]):
    """One policy measure followed over time; its id is the rule's slug."""

    class Event(CanMutateAggregate[str], metaclass=MetaDomainEvent):
        originator_id: str
        originator_version: int
        timestamp: datetime

    class Snapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
        """The rule's state at one version, kept beside its events (never one of them): a load
        starts from the newest snapshot and applies only the events after it."""

        originator_id: str
        originator_version: int
        timestamp: datetime
        topic: str
        state: dict[str, Any]

    class Created(Event, CanInitAggregate[str]):
        originator_topic: str

    class Registered(Created):
        title: str
        jurisdiction: str
        instrument: str
        targets: list[str]
        subjects: list[str]
        tags: list[str]
        links: list[dict[str, str]]
        request: dict[str, str] | None

    class ActionRecorded(Event):
        """Base of the events of the kinds of action (one per kind, made below from kinds.py);
        ``action`` holds the action's fields."""

        action: dict[str, Any]
        request: dict[str, str] | None

        def apply(self, aggregate: Rule) -> None:
            aggregate.actions[self.action["id"]] = [
                self.originator_version, False, action_fingerprint(self.action),
                *_kept(self.action)]

    class ActionCorrected(Event):
        correction_id: str
        action_id: str
        changes: dict[str, Any]
        reason: str
        request: dict[str, str] | None

        def apply(self, aggregate: Rule) -> None:
            known = aggregate.actions[self.action_id]
            known[CHECKED:] = _kept(apply_correction(unchecked(known[CHECKED:]), self.changes))

    class ActionRetracted(Event):
        retraction_id: str
        action_id: str
        reason: str
        request: dict[str, str] | None

        def apply(self, aggregate: Rule) -> None:
            aggregate.actions[self.action_id][RETRACTED] = True

    EVENT_BY_KIND: ClassVar[dict[str, type[Rule.ActionRecorded]]] = {}

    def __init__(
        self,
        title: str,
        jurisdiction: str,
        instrument: str,
        targets: list[str],
        subjects: list[str],
        tags: list[str],
        links: list[dict[str, str]],
    ) -> None:
        self.title = title
        self.jurisdiction = jurisdiction
        self.instrument = instrument
        self.targets = list(targets)
        self.subjects = list(subjects)
        self.tags = list(tags)
        self.links = [dict(link) for link in links]
        # Each action's id -> what the rule's checks need of it, never its summary or sources
        # (see VERSION): small, so that a snapshot of a long rule loads quickly.
        self.actions: dict[str, list] = {}

    @classmethod
    def register(
        cls, rule_id: str, fields: dict[str, Any], at: datetime, request: dict[str, str] | None = None
    ) -> Rule:
        return cls._create(
            cls.Registered,
            id=rule_id,
            timestamp=at,
            request=request,
            **{name: fields[name] for name in RULE_FIELDS},
        )

    @property
    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RULE_FIELDS}

    def record(
        self, action: dict[str, Any], at: datetime, request: dict[str, str] | None = None
    ) -> bool:
        """Record an action; False when the same action (same id, same fields) is already here.

        The action's fields are checked first, so that invalid input is said as such even when
        its id is taken."""
        check_action_fields(action)
        existing = self.actions.get(action["id"])
        if existing is not None:
            if existing[FINGERPRINT] == action_fingerprint(action):
                return False
            raise Conflict(
                f"Action {action['id']!r} already exists on rule {self.id!r} with other fields.",
                {"id": "already used for another action on this rule"},
            )
        self.trigger_event(self.EVENT_BY_KIND[action["kind"]], action=action, timestamp=at, request=request)
        return True

    def has_other(self, action: dict[str, Any]) -> bool:
        """Whether an action with ``action``'s id is here with other fields."""
        known = self.actions.get(action.get("id"))
        return known is not None and known[FINGERPRINT] != action_fingerprint(action)

    def action_version(self, action_id: str) -> int:
        """The version of the event that recorded the action."""
        return self.actions[action_id][VERSION]

    def _live_action(self, action_id: str) -> list:
        found = self.actions.get(action_id)
        if found is None:
            raise NotFound(f"Rule {self.id!r} has no action {action_id!r}.")
        if found[RETRACTED]:
            raise Conflict(f"Action {action_id!r} was retracted; it can no longer change.")
        return found

    def correct(
        self,
        correction_id: str,
        action_id: str,
        changes: dict[str, Any],
        reason: str,
        at: datetime,
        request: dict[str, str] | None = None,
    ) -> None:
        found = self._live_action(action_id)
        unknown = sorted(set(changes) - set(CORRECTABLE))
        if unknown:
            raise InvalidInput(
                "Only some fields of an action can be corrected.",
                {name: "cannot be corrected" for name in unknown},
            )
        if not changes:
            raise InvalidInput(
                "A correction must change at least one field.",
                {"_schema": f"give one or more of {', '.join(CORRECTABLE)}"},
            )
        check_action_fields(apply_correction(unchecked(found[CHECKED:]), changes))
        self.trigger_event(
            self.ActionCorrected,
            correction_id=correction_id,
            action_id=action_id,
            changes=changes,
            reason=reason,
            timestamp=at,
            request=request,
        )

    def retract(
        self,
        retraction_id: str,
        action_id: str,
        reason: str,
        at: datetime,
        request: dict[str, str] | None = None,
    ) -> None:
        self._live_action(action_id)
        self.trigger_event(
            self.ActionRetracted,
            retraction_id=retraction_id,
            action_id=action_id,
            reason=reason,
            timestamp=at,
            request=request,
        )


# One event class per kind, as kinds.py names it: Rule.Banned, Rule.FeeSet... Their names are
# stored with every event (as topics), so they are made under exactly those names.
for _kind in BY_NAME.values():
    _event = type(Rule.ActionRecorded)(_kind.event, (Rule.ActionRecorded,), {
        "__module__": __name__, "__qualname__": f"Rule.{_kind.event}",
        "__doc__": f"A {_kind.name} action recorded."})
    setattr(Rule, _kind.event, _event)
    Rule.EVENT_BY_KIND[_kind.name] = _event
