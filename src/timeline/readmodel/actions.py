"""A rule's actions as known from its events: corrections applied, retractions noted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from timeline.domain.fold import Action
from timeline.domain.kinds import apply_correction
from timeline.domain.model import to_fold_action
from timeline.events import ACTION_CORRECTED, ACTION_RECORDED, ACTION_RETRACTED


@dataclass
class KnownAction:
    fields: dict[str, Any]
    original: dict[str, Any]
    position: int
    recorded_at: str
    corrections: list[dict[str, Any]] = field(default_factory=list)
    retraction: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.fields["id"]

    def to_fold(self) -> Action:
        return to_fold_action(self.fields, self.position)


def known_actions(rows: Iterable[Mapping[str, Any]]) -> dict[str, KnownAction]:
    """Fold ``rule_events`` rows (in position order) into the actions they describe."""
    actions: dict[str, KnownAction] = {}
    for row in rows:
        kind = row["type"]
        data = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        if kind == ACTION_RECORDED:
            actions[data["id"]] = KnownAction(
                fields=dict(data), original=dict(data), position=row["position"],
                recorded_at=row["recorded_at"],
            )
        elif kind == ACTION_CORRECTED:
            known = actions[data["action_id"]]
            changes = data["changes"]
            known.corrections.append({
                "id": data["id"],
                "reason": data["reason"],
                "recorded_at": row["recorded_at"],
                "position": row["position"],
                "changes": changes,
                "previous": {name: known.fields.get(name) for name in changes},
            })
            known.fields = apply_correction(known.fields, changes)
        elif kind == ACTION_RETRACTED:
            actions[data["action_id"]].retraction = {
                "id": data["id"],
                "reason": data["reason"],
                "recorded_at": row["recorded_at"],
                "position": row["position"],
            }
    return actions


def live_fold_actions(actions: Mapping[str, KnownAction]) -> list[Action]:
    return [known.to_fold() for known in actions.values() if known.retraction is None]
