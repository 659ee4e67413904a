"""Fixture files: human-written YAML (or JSON) rules and their actions, loaded through the schemas."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from timeline.domain.errors import TimelineError
from timeline.schemas import FixtureFileSchema, errors_by_field

FIXTURE_SUFFIXES = (".yaml", ".yml", ".json")


class _FixtureLoader(yaml.SafeLoader):
    """Safe YAML that keeps an unquoted 2025-12-08 as the text written, not a date object."""


_FixtureLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class FixtureError(TimelineError):
    """A fixture file that cannot be loaded; it names the file, the rule and the field."""

    status = 422
    title = "Invalid fixture"


@dataclass
class LoadReport:
    files: int = 0
    rules_added: int = 0
    actions_added: int = 0


def bundled_fixtures() -> list[Path]:
    """The fixtures shipped inside the package (or, from a source checkout, at its root)."""
    folder = Path(str(resources.files("timeline"))) / "fixtures"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[2] / "fixtures"
    return sorted(p for p in folder.iterdir() if p.suffix in FIXTURE_SUFFIXES)


def read_fixture(path: Path) -> list[dict[str, Any]]:
    """Parse and validate one file; raises :class:`FixtureError` naming what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{path}: cannot be read ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_FixtureLoader)
    except yaml.YAMLError as exc:
        raise FixtureError(f"{path}: not valid YAML or JSON ({exc})") from None
    try:
        return FixtureFileSchema().load(raw if isinstance(raw, dict) else {"rules": raw})["rules"]
    except ValidationError as exc:
        raise FixtureError(_describe(path, raw, exc.messages), errors_by_field(exc.messages)) from None


def _describe(path: Path, raw: Any, messages: Any) -> str:
    """``file: rule 'x': actions.0.rate_percent: message`` for the first few problems."""
    parts = []
    for field, message in list(errors_by_field(messages).items())[:5]:
        where = field
        bits = field.split(".")
        if len(bits) >= 2 and bits[0] == "rules" and bits[1].isdigit():
            index = int(bits[1])
            rule_id = None
            try:
                rule_id = raw["rules"][index].get("id")
            except (TypeError, KeyError, IndexError, AttributeError):
                pass
            label = f"rule {rule_id!r}" if rule_id else f"rule #{index + 1}"
            rest = bits[2:]
            if len(rest) >= 2 and rest[0] == "actions" and rest[1].isdigit():
                try:
                    action_id = raw["rules"][index]["actions"][int(rest[1])].get("id")
                except (TypeError, KeyError, IndexError, AttributeError):
                    action_id = None
                label += f", action {action_id!r}" if action_id else f", action #{int(rest[1]) + 1}"
                rest = rest[2:]
            where = f"{label}, field {'.'.join(rest) or '(the whole item)'}"
        parts.append(f"{where}: {message}")
    return f"{path}: " + "; ".join(parts)


def _ordered_by_links(rules: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """Rules that others link to come first, so every link names a registered rule."""
    by_id = {rule["id"]: (path, rule) for path, rule in rules}
    done: list[tuple[Path, dict]] = []
    seen: set[str] = set()

    def visit(rule_id: str, chain: tuple[str, ...]) -> None:
        if rule_id in seen or rule_id not in by_id:
            return
        if rule_id in chain:
            raise FixtureError(f"{by_id[rule_id][0]}: rule {rule_id!r} links in a circle: "
                               + " -> ".join((*chain, rule_id)))
        for link in by_id[rule_id][1]["links"]:
            visit(link["rule"], (*chain, rule_id))
        seen.add(rule_id)
        done.append(by_id[rule_id])

    for rule_id in by_id:
        visit(rule_id, ())
    return done


def load_fixtures(tracker: Any, paths: list[Path]) -> LoadReport:
    """Validate every file first, then store; loading the same files twice adds nothing."""
    report = LoadReport()
    rules: list[tuple[Path, dict]] = []
    for path in paths:
        for rule in read_fixture(path):
            rules.append((Path(path), rule))
        report.files += 1
    ids = [rule["id"] for _, rule in rules]
    for path, rule in rules:
        if ids.count(rule["id"]) > 1:
            raise FixtureError(f"{path}: rule {rule['id']!r} is defined more than once")
        for link in rule["links"]:
            if link["rule"] not in ids and not tracker.rule_exists(link["rule"]):
                raise FixtureError(
                    f"{path}: rule {rule['id']!r}, field links: no rule {link['rule']!r} "
                    "in these files or in the store",
                    {"links": f"no rule {link['rule']!r}"},
                )
        action_ids = [a.get("id") for a in rule["actions"]]
        for action in rule["actions"]:
            if not action.get("id"):
                raise FixtureError(
                    f"{path}: rule {rule['id']!r}, an action of kind {action['kind']!r} has no id; "
                    "fixture actions need stable ids so that loading twice adds nothing",
                    {"id": "required in fixtures"},
                )
            if action_ids.count(action["id"]) > 1:
                raise FixtureError(f"{path}: rule {rule['id']!r}, action {action['id']!r} "
                                   "is defined more than once")
    for path, rule in rules:
        try:
            tracker.app.check_repeat(rule)
        except TimelineError as exc:
            raise FixtureError(f"{path}: rule {rule['id']!r}: {exc.detail}", exc.errors) from None
    ordered = _ordered_by_links(rules)
    for path, rule in ordered:
        fields = {k: v for k, v in rule.items() if k != "actions"}
        try:
            written = tracker.register_rule(fields)
        except TimelineError as exc:
            raise FixtureError(f"{path}: rule {rule['id']!r}: {exc.detail}", exc.errors) from None
        report.rules_added += int(written.created)
    for path, rule in ordered:
        for action in rule["actions"]:
            try:
                written = tracker.record_action(rule["id"], action)
            except TimelineError as exc:
                raise FixtureError(
                    f"{path}: rule {rule['id']!r}, action {action['id']!r}: {exc.detail}", exc.errors
                ) from None
            report.actions_added += int(written.created)
    return report
