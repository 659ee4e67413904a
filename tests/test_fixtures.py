"""The bundled fixtures from the seed article, and what loading fixture files does.

The article (tests/data/seed_article.txt, a copy of the seed) is dated December 2025.
"""

from __future__ import annotations

import calendar
import re
from datetime import date
from pathlib import Path

import pytest

from timeline.domain.dates import DAY, PolicyDate
from timeline.fixtures import FixtureError, bundled_fixtures, load_fixtures, read_fixture
from timeline.service import Tracker

from tests.conftest import FIXTURES
from tests.listings import states

ARTICLE = (Path(__file__).parent / "data" / "seed_article.txt").read_text(encoding="utf-8")
AS_OF = date(2025, 12, 9)


def all_rules() -> list[dict]:
    return [rule for path in bundled_fixtures() for rule in read_fixture(path)]


def all_actions() -> list[tuple[str, dict]]:
    return [(rule["id"], action) for rule in all_rules() for action in rule["actions"]]


def sentences(text: str) -> set[str]:
    found = set()
    for paragraph in text.splitlines():
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\u201c\"])", paragraph.strip()):
            if sentence:
                found.add(sentence)
    return found


# The files themselves ----------------------------------------------------------------------


def test_the_bundled_fixtures_are_every_file_in_the_fixtures_folder():
    files = sorted(p for p in FIXTURES.iterdir() if p.is_file())
    assert [p.name for p in bundled_fixtures()] == [p.name for p in files]
    assert len(files) >= 10


@pytest.mark.parametrize("path", bundled_fixtures(), ids=lambda p: p.name)
def test_each_fixture_file_passes_the_schemas(path: Path):
    rules = read_fixture(path)
    assert rules
    for rule in rules:
        assert rule["actions"], f"{rule['id']} has no actions"


def test_every_action_quotes_a_whole_sentence_of_the_article_verbatim():
    whole = sentences(ARTICLE)
    for rule_id, action in all_actions():
        quotes = [s.get("quote") for s in action["sources"]]
        assert quotes and all(quotes), f"{rule_id}/{action['id']} has a source without a quote"
        for quote in quotes:
            assert quote in ARTICLE, f"{rule_id}/{action['id']}: not verbatim: {quote!r}"
            assert quote in whole, f"{rule_id}/{action['id']}: not a whole sentence: {quote!r}"


def test_action_ids_are_stable_and_unique():
    ids = [(rule_id, action["id"]) for rule_id, action in all_actions()]
    assert all(action_id for _, action_id in ids)
    assert len(set(ids)) == len(ids)
    rule_ids = [rule["id"] for rule in all_rules()]
    assert len(set(rule_ids)) == len(rule_ids)


def test_a_date_to_the_day_is_one_the_quoted_sentences_give():
    for rule_id, action in all_actions():
        for name in ("effective", "announced"):
            if action.get(name) is None:
                continue
            parsed = PolicyDate.parse(action[name])
            if parsed.precision != DAY:
                continue
            spoken = f"{calendar.month_name[parsed.start.month]} {parsed.start.day}"
            assert any(spoken in (s.get("quote") or "") for s in action["sources"]), (
                f"{rule_id}/{action['id']}: {name} {action[name]} is more precise than its sources"
            )


# What the article says, as fixtures --------------------------------------------------------

# (rule, action id, kind, effective) with the precision the article gives, and no more.
EXPECTED_ACTIONS = [
    ("us-h200-export-licensing-cn", "us-h200-eased-2025-12-08", "ease", "2025-12-08"),
    ("us-h200-export-licensing-cn", "us-h200-fee-25-2025-12-08", "fee", "2025-12-08"),
    ("us-advanced-ai-chip-export-controls-cn", "us-ai-chip-controls-tightened-2022", "restrict",
     "2022"),
    ("cn-nvidia-h20-purchase-ban", "cn-h20-banned-2025-09", "ban", "2025-09"),
    ("us-fentanyl-tariff-cn", "us-fentanyl-tariff-20-2025", "fee", "2025"),
    ("us-fentanyl-tariff-cn", "us-fentanyl-tariff-halved-10-2025-10", "fee", "2025-10"),
    ("cn-rare-earth-export-restrictions", "cn-rare-earth-restrictions-paused-2025", "pause",
     "2025"),
    ("cn-gallium-germanium-export-licensing", "cn-gallium-germanium-general-licenses-2025",
     "ease", "2025"),
    ("cn-us-soybean-purchases", "cn-us-soybean-purchases-resumed-2025", "ease", "2025"),
    ("cn-h200-purchase-approvals", "cn-h200-approvals-weighed-2025-12", "propose", "2025-12"),
    ("us-safe-chips-bill", "us-safe-chips-bill-introduced-2025-12-04", "propose", "2025-12-04"),
    ("cn-rare-earth-embargo-jp", "cn-rare-earth-embargo-jp-2010", "ban", "2010"),
]


def test_every_policy_action_of_the_article_is_a_fixture_with_the_articles_precision():
    found = {(rule_id, action["id"]): action for rule_id, action in all_actions()}
    for rule_id, action_id, kind, effective in EXPECTED_ACTIONS:
        action = found.get((rule_id, action_id))
        assert action is not None, f"missing {rule_id}/{action_id}"
        assert (action["kind"], action["effective"]) == (kind, effective), action_id


def test_the_rules_say_who_issues_them_and_whom_they_target():
    rules = {rule["id"]: rule for rule in all_rules()}
    h200 = rules["us-h200-export-licensing-cn"]
    assert (h200["jurisdiction"], h200["instrument"], h200["targets"]) == (
        "US", "export_control", ["CN"])
    assert "Nvidia H200" in h200["subjects"]
    assert rules["us-fentanyl-tariff-cn"]["instrument"] == "import_tariff"
    assert rules["us-safe-chips-bill"]["instrument"] == "legislation"
    assert {"rule": "us-h200-export-licensing-cn", "relation": "blocks"} in rules[
        "us-safe-chips-bill"]["links"]
    embargo = rules["cn-rare-earth-embargo-jp"]
    assert (embargo["jurisdiction"], embargo["targets"]) == ("CN", ["JP"])
    assert rules["cn-rare-earth-export-restrictions"]["jurisdiction"] == "CN"


def states_by_id(tracker: Tracker, day: date = AS_OF) -> dict[str, dict]:
    return {state["rule"]["id"]: state for state in states(tracker, day)}


def test_on_9_december_2025_the_state_is_what_the_article_says(loaded: Tracker):
    states = states_by_id(loaded)

    h200 = states["us-h200-export-licensing-cn"]
    assert (h200["status"], h200["rate_percent"], h200["since"]) == ("eased", 25, "2025-12-08")
    assert any("approved customers" in c for c in h200["conditions"])
    assert h200["certain"]

    tariff = states["us-fentanyl-tariff-cn"]
    assert (tariff["status"], tariff["rate_percent"]) == ("in_force", 10)

    rare_earths = states["cn-rare-earth-export-restrictions"]
    assert (rare_earths["status"], rare_earths["until"]) == ("paused", "2026")
    assert rare_earths["rate_percent"] is None and rare_earths["conditions"] == []

    assert states["us-advanced-ai-chip-export-controls-cn"]["status"] == "restricted"
    assert states["us-advanced-ai-chip-export-controls-cn"]["since"] == "2022"
    assert (states["cn-nvidia-h20-purchase-ban"]["status"],
            states["cn-nvidia-h20-purchase-ban"]["since"]) == ("banned", "2025-09")
    gallium = states["cn-gallium-germanium-export-licensing"]
    assert gallium["status"] == "eased"
    assert any("general export licen" in c for c in gallium["conditions"])
    assert states["cn-us-soybean-purchases"]["status"] == "eased"
    assert states["cn-h200-purchase-approvals"]["status"] == "proposed"
    safe_chips = states["us-safe-chips-bill"]
    assert (safe_chips["status"], safe_chips["since"]) == ("proposed", "2025-12-04")
    assert (states["cn-rare-earth-embargo-jp"]["status"],
            states["cn-rare-earth-embargo-jp"]["since"]) == ("banned", "2010")


def test_before_8_december_the_h200_was_restricted_and_the_bill_not_yet_introduced(
    loaded: Tracker,
):
    before = states_by_id(loaded, date(2025, 12, 3))
    h200 = before["us-h200-export-licensing-cn"]
    assert (h200["status"], h200["rate_percent"], h200["conditions"]) == ("restricted", None, [])
    assert before["us-safe-chips-bill"]["status"] == "none"
    assert states_by_id(loaded, date(2025, 9, 30))["us-fentanyl-tariff-cn"]["rate_percent"] == 20


def test_what_only_a_month_or_a_year_dates_is_uncertain_within_it(loaded: Tracker):
    states = states_by_id(loaded)
    approvals = states["cn-h200-purchase-approvals"]
    assert not approvals["certain"]
    assert approvals["uncertain_because"] == ["cn-h200-approvals-weighed-2025-12"]
    assert "us-fentanyl-tariff-20-2025" in states["us-fentanyl-tariff-cn"]["uncertain_because"]
    assert states["us-fentanyl-tariff-cn"]["since"] == "2025"


# Loading --------------------------------------------------------------------------------


def test_loading_the_fixtures_twice_adds_nothing(tracker: Tracker):
    first = load_fixtures(tracker, bundled_fixtures())
    assert first.files == len(bundled_fixtures())
    assert first.rules_added == len(all_rules())
    assert first.actions_added == len(all_actions())
    head = tracker.head()
    export = list(tracker.export())
    second = load_fixtures(tracker, bundled_fixtures())
    assert (second.rules_added, second.actions_added) == (0, 0)
    assert tracker.head() == head
    assert list(tracker.export()) == export


def test_fixtures_that_link_to_each_other_load_in_any_order(tracker: Tracker):
    report = load_fixtures(tracker, list(reversed(bundled_fixtures())))
    assert report.rules_added == len(all_rules())


GOOD = """\
rules:
  - id: test-rule-a
    title: A test rule
    jurisdiction: US
    instrument: export_control
    actions:
      - id: a-ban
        kind: ban
        effective: "2025-09"
        sources: [{title: Asia Times}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BAD_FILES = [
    # (what is wrong, the text, words the message must contain)
    ("a wrong value", GOOD.replace("kind: ban", "kind: embargo"),
     ["test-rule-a", "a-ban", "kind"]),
    ("a field the kind does not allow",
     GOOD.replace("kind: ban", "kind: ban\n        rate_percent: 5"),
     ["test-rule-a", "a-ban", "rate_percent"]),
    ("a misspelt field", GOOD.replace("effective:", "efective:"),
     ["test-rule-a", "a-ban", "efective"]),
    ("a date that is not one", GOOD.replace('"2025-09"', '"2025-13"'),
     ["test-rule-a", "a-ban", "effective"]),
    ("no sources", GOOD.replace("sources: [{title: Asia Times}]", "sources: []"),
     ["test-rule-a", "a-ban", "sources"]),
    ("an unknown jurisdiction", GOOD.replace("jurisdiction: US", "jurisdiction: XX"),
     ["test-rule-a", "jurisdiction"]),
    ("a bad rule id", GOOD.replace("id: test-rule-a", "id: Test Rule"),
     ["Test Rule", "id", "^[a-z0-9][a-z0-9-]{2,79}$"]),
    ("a missing title", GOOD.replace("    title: A test rule\n", ""),
     ["test-rule-a", "title"]),
    ("an action without an id", GOOD.replace("      - id: a-ban\n        kind", "      - kind"),
     ["test-rule-a", "id"]),
    ("a link to no rule",
     GOOD.replace("    actions:",
                  "    links: [{rule: no-such-rule, relation: blocks}]\n    actions:"),
     ["test-rule-a", "links", "no-such-rule"]),
    ("a pause that ends before it starts",
     GOOD.replace("kind: ban", "kind: pause\n        until: \"2025-08\""),
     ["test-rule-a", "a-ban", "until"]),
    ("the same action twice", GOOD + GOOD[GOOD.index("      - id: a-ban"):],
     ["test-rule-a", "a-ban"]),
    ("not YAML", "rules:\n  - id: x\n   oops", []),
    ("an empty file", "", ["rules"]),
    ("a list of strings", "- just text\n", []),
]


@pytest.mark.parametrize("what, text, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_fixture_file_is_named_with_the_rule_and_field_and_nothing_is_stored(
    tracker: Tracker, tmp_path: Path, what: str, text: str, words: list[str],
):
    good = write(tmp_path, "good.yaml", GOOD.replace("test-rule-a", "test-rule-good"))
    bad = write(tmp_path, "bad.yaml", text)
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [good, bad])
    message = raised.value.detail
    assert str(bad) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert tracker.head() == 0  # not even the good file's rule


def test_a_file_that_cannot_be_read_is_named(tracker: Tracker, tmp_path: Path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00rules")
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [path])
    assert str(path) in raised.value.detail
    assert tracker.head() == 0


def test_the_same_rule_in_two_files_is_refused(tracker: Tracker, tmp_path: Path):
    one = write(tmp_path, "one.yaml", GOOD)
    two = write(tmp_path, "two.yaml", GOOD)
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [one, two])
    assert "test-rule-a" in raised.value.detail and "more than once" in raised.value.detail
    assert tracker.head() == 0


def test_a_file_that_contradicts_the_store_is_refused_and_stores_nothing(
    tracker: Tracker, tmp_path: Path,
):
    load_fixtures(tracker, [write(tmp_path, "first.yaml", GOOD)])
    head = tracker.head()
    changed_rule = write(tmp_path, "title.yaml", GOOD.replace("A test rule", "Another title")
                         + GOOD.replace("test-rule-a", "test-rule-b")[len("rules:\n"):])
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [changed_rule])
    assert str(changed_rule) in raised.value.detail and "test-rule-a" in raised.value.detail
    changed_action = write(tmp_path, "action.yaml", GOOD.replace('"2025-09"', '"2025-10"'))
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [changed_action])
    assert "a-ban" in raised.value.detail
    assert tracker.head() == head
    assert not tracker.rule_exists("test-rule-b")


def test_a_link_to_a_rule_already_in_the_store_is_fine(tracker: Tracker, tmp_path: Path):
    load_fixtures(tracker, [write(tmp_path, "first.yaml", GOOD)])
    linked = GOOD.replace("test-rule-a", "test-rule-b").replace(
        "    actions:", "    links: [{rule: test-rule-a, relation: amends}]\n    actions:")
    report = load_fixtures(tracker, [write(tmp_path, "second.yaml", linked)])
    assert report.rules_added == 1


def test_json_fixture_files_load_too(tracker: Tracker, tmp_path: Path):
    import json

    import yaml

    path = write(tmp_path, "rule.json", json.dumps(yaml.safe_load(GOOD)))
    report = load_fixtures(tracker, [path])
    assert (report.rules_added, report.actions_added) == (1, 1)



def test_unquoted_dates_in_yaml_are_read_as_written(tracker: Tracker, tmp_path: Path):
    # YAML would turn 2025-12-08 into a date object; a person writing a fixture means the text.
    text = GOOD.replace('effective: "2025-09"',
                        "effective: 2025-12-08\n        announced: 2025-12-08")
    load_fixtures(tracker, [write(tmp_path, "unquoted.yaml", text)])
    _, items = tracker.history("test-rule-a")
    assert (items[0]["effective"], items[0]["announced"]) == ("2025-12-08", "2025-12-08")


def test_rules_that_link_in_a_circle_are_refused(tracker: Tracker, tmp_path: Path):
    a = GOOD.replace("    actions:", "    links: [{rule: test-rule-b, relation: related}]\n"
                     "    actions:")
    b = GOOD.replace("test-rule-a", "test-rule-b").replace(
        "    actions:", "    links: [{rule: test-rule-a, relation: related}]\n    actions:")
    with pytest.raises(FixtureError) as raised:
        load_fixtures(tracker, [write(tmp_path, "a.yaml", a), write(tmp_path, "b.yaml", b)])
    assert "links in a circle" in raised.value.detail
    assert tracker.head() == 0
