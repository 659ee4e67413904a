"""Fixture files: human-written YAML or JSON rules and their actions, and CSV files of rules or
of actions, loaded through the schemas."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from timeline.csvfixtures import ActionRow, CsvError, read_csv_fixture
from timeline.domain.errors import TimelineError
from timeline.domain.kinds import ACTION_FIELDS
from timeline.domain.model import fingerprint
from timeline.schemas import FixtureFileSchema, errors_by_field

FIXTURE_SUFFIXES = (".yaml", ".yml", ".json", ".csv")


class _FixtureLoader(yaml.SafeLoader):
    """Safe YAML that keeps an unquoted 2025-12-08 as the text written, not a date object."""


_FixtureLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class FixtureError(TimelineError):
    """A fixture file that cannot be loaded; it names the file, the rule and the field."""


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


def _ordered_by_links(rules: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Rules that others link to come first, so every link names a registered rule."""
    by_id = {rule["id"]: (path, rule) for path, rule in rules}
    done: list[tuple[str, dict]] = []
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
    """Validate every file first, then store; loading the same files twice adds nothing.

    YAML and JSON files hold rules with their actions; a CSV file holds rules or actions (see
    :mod:`timeline.csvfixtures`), an action's rule being in these files or in the store.
    """
    report = LoadReport()
    rules: list[tuple[str, dict]] = []  # (where it was read, the rule)
    rows: list[ActionRow] = []
    for path in paths:
        if Path(path).suffix.lower() == ".csv":
            try:
                found = read_csv_fixture(Path(path))
            except CsvError as exc:
                raise FixtureError(exc.detail, exc.errors) from None
            rules.extend((where, _completed(tracker, rule, found.rule_fields))
                         for rule, where in found.rules)
            rows.extend(found.actions)
        else:
            rules.extend((str(path), rule) for rule in read_fixture(path))
        report.files += 1
    ids = Counter(rule["id"] for _, rule in rules)
    for where, rule in rules:
        if ids[rule["id"]] > 1:
            raise FixtureError(f"{where}: rule {rule['id']!r} is defined more than once")
        for link in rule["links"]:
            if link["rule"] not in ids and not tracker.rule_exists(link["rule"]):
                raise FixtureError(
                    f"{where}: rule {rule['id']!r}, field links: no rule {link['rule']!r} "
                    "in these files or in the store",
                    {"links": f"no rule {link['rule']!r}"},
                )
    # Where each action was read, to name it in an error.
    labels: dict[tuple[str, str], str] = {}
    for where, rule in rules:
        for action in rule["actions"]:
            if not action.get("id"):
                raise FixtureError(
                    f"{where}: rule {rule['id']!r}, an action of kind {action['kind']!r} has no id; "
                    "fixture actions need stable ids so that loading twice adds nothing",
                    {"id": "required in fixtures"},
                )
            labels[(rule["id"], action["id"])] = f"{where}: rule {rule['id']!r}, action {action['id']!r}"
    # Rows of actions join their rule's actions, in these files or in the store.
    in_files = {rule["id"]: rule for _, rule in rules}
    in_store: dict[str, list[dict]] = {}
    retracted: set[tuple[str, str]] = set()
    for row in rows:
        if not row.action.get("id"):
            raise FixtureError(f"{row.where}, column id: an action needs an id (letters, digits "
                               "and . _ : -), so that loading the file twice adds nothing",
                               {"id": "required in fixtures"})
        if row.rule_id in in_files:
            in_files[row.rule_id]["actions"].append(row.action)
        elif tracker.rule_exists(row.rule_id):
            in_store.setdefault(row.rule_id, []).append(row.action)
        else:
            raise FixtureError(f"{row.where}, column rule: no rule {row.rule_id!r} in these files "
                               "or in the store", {"rule": f"no rule {row.rule_id!r}"})
        labels[(row.rule_id, row.action["id"])] = row.where
        if row.retracted:
            retracted.add((row.rule_id, row.action["id"]))
    for rule_id, actions in [*((r["id"], r["actions"]) for _, r in rules), *in_store.items()]:
        for action_id, count in Counter(a["id"] for a in actions).items():
            if count > 1:
                raise FixtureError(f"{labels[(rule_id, action_id)]}: the action id {action_id!r} "
                                   f"is used more than once on rule {rule_id!r}")
    for where, rule in rules:
        try:
            tracker.check_repeat({**rule, "actions": []})
        except TimelineError as exc:
            raise FixtureError(f"{where}: rule {rule['id']!r}: {exc.detail}", exc.errors) from None
    ordered = _ordered_by_links(rules)
    new = _new_actions(tracker, [*((r["id"], r["actions"]) for _, r in ordered),
                                 *in_store.items()], labels, retracted)
    for where, rule in ordered:
        fields = {k: v for k, v in rule.items() if k != "actions"}
        try:
            written = tracker.register_rule(fields)
        except TimelineError as exc:
            raise FixtureError(f"{where}: rule {rule['id']!r}: {exc.detail}", exc.errors) from None
        report.rules_added += int(written.created)
    for rule_id, action in new:
        try:
            written = tracker.record_action(rule_id, action)
        except TimelineError as exc:
            raise FixtureError(f"{labels[(rule_id, action['id'])]}: {exc.detail}", exc.errors) from None
        report.actions_added += int(written.created)
    return report


def _completed(tracker: Any, rule: dict[str, Any], given: tuple[str, ...] | None) -> dict:
    """A rule read from a file that gives only some of its fields (``given``): a registered
    rule's other fields are its own, so an unedited row registers nothing new."""
    if given is None or not tracker.rule_exists(rule["id"]):
        return rule
    stored = tracker.state(rule["id"])["rule"]
    return {**rule, **{k: v for k, v in stored.items() if k not in given}}


def _new_actions(tracker: Any, by_rule: list[tuple[str, list[dict]]],
                 labels: dict[tuple[str, str], str], retracted: set[tuple[str, str]],
                 ) -> list[tuple[str, dict]]:
    """The actions to record: those the store does not hold yet. One it holds is a repeat when
    it equals the action as first recorded or as corrected since (an exported history)."""
    new: list[tuple[str, dict]] = []
    for rule_id, actions in by_rule:
        known = _recorded_actions(tracker, rule_id)
        for action in actions:
            key = (rule_id, action["id"])
            if action["id"] not in known:
                if key in retracted:
                    raise FixtureError(f"{labels[key]}, column retracted: a retracted action is "
                                       "not recorded anew; delete the row to leave it out",
                                       {"retracted": "the action is not in the store"})
                new.append((rule_id, action))
            elif fingerprint(action) not in known[action["id"]]:
                raise FixtureError(
                    f"{labels[key]}: action {action['id']!r} is already recorded on rule "
                    f"{rule_id!r} with other fields (a recorded action changes by a correction)",
                    {"id": "already recorded with other fields"})
    return new


def _recorded_actions(tracker: Any, rule_id: str) -> dict[str, set[str]]:
    """The fingerprints of each action the store holds for a rule: as first recorded, and as
    known now."""
    if not tracker.rule_exists(rule_id):
        return {}
    _, items = tracker.history(rule_id)
    known: dict[str, set[str]] = {}
    for item in items:
        now = {name: item[name] for name in ACTION_FIELDS if name in item}
        known[item["id"]] = {fingerprint(now), fingerprint(item["original"] or now)}
    return known
