"""Use cases on the event store: register, record, correct, retract, import.

One method per use case: load the aggregate, call it, save, say what was stored. The caller
holds the store's write lock and passes a :class:`~timeline.store.RecordClock`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from timeline.domain.errors import Conflict, InvalidInput, NotFound
from timeline.domain.model import RULE_FIELDS, Rule, check_action_fields, fingerprint
from timeline.store import RecordClock


@dataclass(frozen=True)
class Outcome:
    """What a write did: ``created`` is False for a repeat that stored nothing."""

    rule_id: str
    id: str
    version: int
    created: bool
    position: int | None = None
    recorded_at: datetime | None = None


MAX_POSITION = 2**63 - 1


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class PolicyApplication(Application[str]):
    name = "timeline"

    def get_rule(self, rule_id: str) -> Rule:
        try:
            return self.repository.get(rule_id)
        except AggregateNotFoundError:
            raise NotFound(f"No rule {rule_id!r} is registered.") from None

    def rule_exists(self, rule_id: str) -> bool:
        return rule_id in self.repository

    def _save(self, rule: Rule, ident: str) -> Outcome:
        try:
            recordings = self.save(rule)
        except IntegrityError:
            raise Conflict(
                f"Rule {rule.id!r} was changed by another writer; try again.",
            ) from None
        last = recordings[-1]
        return Outcome(
            rule_id=rule.id,
            id=ident,
            version=rule.version,
            created=True,
            position=last.notification.id,
            recorded_at=last.domain_event.timestamp,
        )

    def check_repeat(self, rule: dict[str, Any]) -> None:
        """Raise :class:`Conflict` if loading this rule and its actions again would conflict."""
        if not self.rule_exists(rule["id"]):
            return
        existing = self.get_rule(rule["id"])
        if fingerprint(existing.fields) != fingerprint({k: rule[k] for k in RULE_FIELDS}):
            raise Conflict(f"Rule {rule['id']!r} is already registered with other fields.",
                           {"id": "already registered with other fields"})
        for action in rule.get("actions", []):
            known = existing.actions.get(action.get("id"))
            if known is not None and known["fingerprint"] != fingerprint(action):
                raise Conflict(f"Action {action['id']!r} already exists with other fields.",
                               {"id": f"action {action['id']!r} already exists with other fields"})

    def register_rule(
        self, rule_id: str, fields: dict[str, Any], clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        """Register a rule; a repeat with identical fields stores nothing, other fields conflict."""
        for link in fields.get("links", []):
            if not self.rule_exists(link["rule"]):
                raise InvalidInput(
                    "A link must name a registered rule.",
                    {"links": f"no rule {link['rule']!r} is registered"},
                )
        if self.rule_exists(rule_id):
            existing = self.get_rule(rule_id)
            if fingerprint(existing.fields) == fingerprint({k: fields[k] for k in RULE_FIELDS}):
                return Outcome(rule_id, rule_id, 1, created=False)
            raise Conflict(
                f"Rule {rule_id!r} is already registered with other fields.",
                {"id": "already registered with other fields"},
            )
        rule = Rule.register(rule_id, fields, clock.next(), request)
        return self._save(rule, rule_id)

    def record_action(
        self, rule_id: str, action: dict[str, Any], clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        rule = self.get_rule(rule_id)
        action = dict(action)
        if not action.get("id"):
            action["id"] = new_id(action["kind"])
        check_action_fields(action)
        if not rule.record(action, clock.next(), request):
            return Outcome(rule_id, action["id"], rule.actions[action["id"]]["version"], False)
        return self._save(rule, action["id"])

    def correct_action(
        self,
        rule_id: str,
        action_id: str,
        changes: dict[str, Any],
        reason: str,
        clock: RecordClock,
        request: dict | None = None,
    ) -> Outcome:
        rule = self.get_rule(rule_id)
        correction_id = new_id("correction")
        rule.correct(correction_id, action_id, changes, reason, clock.next(), request)
        return self._save(rule, correction_id)

    def retract_action(
        self, rule_id: str, action_id: str, reason: str, clock: RecordClock, request: dict | None = None
    ) -> Outcome:
        rule = self.get_rule(rule_id)
        retraction_id = new_id("retraction")
        rule.retract(retraction_id, action_id, reason, clock.next(), request)
        return self._save(rule, retraction_id)

    # Reading the log -------------------------------------------------------------------------

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def events_after(self, position: int, limit: int) -> list[tuple[int, Rule.Event]]:
        """Stored events with a position greater than ``position``, in order."""
        if position >= MAX_POSITION:
            return []  # past any position a store can hold (64-bit in SQLite and PostgreSQL)
        notifications = self.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def iter_events(self, after: int = 0, batch: int = 1000) -> Iterator[tuple[int, Rule.Event]]:
        while True:
            page = self.events_after(after, batch)
            if not page:
                return
            yield from page
            after = page[-1][0]

    def last_recorded_at(self) -> datetime | None:
        head = self.head()
        if not head:
            return None
        page = self.recorder.select_notifications(start=head, limit=1)
        return self.mapper.to_domain_event(page[0]).timestamp if page else None

    def store_events(self, events: Sequence[Rule.Event]) -> None:
        """Append ready-made events (an import) in one atomic write."""
        if events:
            self.events.put(list(events))

    def store_batches(self, events: Iterable[Rule.Event], size: int = 500) -> int:
        count = 0
        batch: list[Rule.Event] = []
        for event in events:
            batch.append(event)
            if len(batch) >= size:
                self.store_events(batch)
                count += len(batch)
                batch = []
        self.store_events(batch)
        return count + len(batch)
