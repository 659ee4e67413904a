"""Research downloads: spells and panels agree with the rule's state on every day they cover,
a download at one known_at never changes, and bad questions are refused before any row."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from timeline.config import Settings
from timeline.domain.dates import parse_instant
from timeline.readmodel.research import PANEL_COLUMNS, SPELL_COLUMNS, period_count, period_ends
from timeline.research import csv_cell
from timeline.spreadsheet import protect, unprotect
from timeline.service import Tracker

from tests.listings import states

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from generate import HistoryGenerator  # noqa: E402

# What a spell or panel row says of the state, and the same field of GET /api/v1/rules/<id>.
STATE_FIELDS = ("status", "rate_percent", "conditions", "certain", "uncertain_because", "based_on")
SOURCE = {"title": "Official notice"}


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _days_to_check(spells: list[dict[str, Any]]) -> list[str]:
    """Days inside, at the edges of and between the spells, and before the first."""
    days = set()
    for spell in spells:
        start = date.fromisoformat(spell["valid_from"])
        days.update({start, start - timedelta(days=1)})
        if spell["valid_to"]:
            end = date.fromisoformat(spell["valid_to"])
            days.update({end, end - timedelta(days=1), start + (end - start) // 2})
        else:
            days.add(start + timedelta(days=400))
    return sorted(day.isoformat() for day in days)


def _check_spells_against_states(tracker: Tracker, known_at: str, spells: list[dict],
                                 ask: Any) -> int:
    """Every spell's fields equal the rule's state on its days; returns the days checked."""
    by_rule: dict[str, list[dict]] = {}
    for spell in spells:
        by_rule.setdefault(spell["rule_id"], []).append(spell)
    checked = 0
    for rule_id, own in by_rule.items():
        # Contiguous, in order, each unlike the one before, the last one open.
        for before, after in zip(own, own[1:]):
            assert before["valid_to"] == after["valid_from"]
            assert any(before[f] != after[f] for f in STATE_FIELDS)
        assert own[-1]["valid_to"] is None
        for day in _days_to_check(own):
            state = ask(rule_id, day, known_at)
            holding = [s for s in own if s["valid_from"] <= day
                       and (s["valid_to"] is None or day < s["valid_to"])]
            if not holding:
                # Before the first spell: nothing applies yet.
                assert day < own[0]["valid_from"]
                assert state["status"] == "none" and state["based_on"] == []
                continue
            assert len(holding) == 1
            spell = holding[0]
            assert {f: spell[f] for f in STATE_FIELDS} == {f: state[f] for f in STATE_FIELDS}, \
                (rule_id, day)
            assert spell["known_at"] == state["known_at"] == known_at
            # The first spell starts on the first action's day.
            assert own[0]["based_on"] == state["based_on"][:len(own[0]["based_on"])]
            checked += 1
    return checked


def test_spells_of_the_fixtures_answer_as_the_rule_does_on_every_day(loaded, client):
    response = client.get("/api/v1/spells?format=jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    spells = _jsonl(response.get_data(as_text=True))
    known_at = spells[0]["known_at"]
    assert [list(s) for s in spells] == [list(SPELL_COLUMNS)] * len(spells)
    assert [(s["rule_id"], s["valid_from"]) for s in spells] == \
        sorted((s["rule_id"], s["valid_from"]) for s in spells)

    def ask(rule_id: str, day: str, at: str) -> dict:
        answer = client.get(f"/api/v1/rules/{rule_id}", query_string={"as_of": day, "known_at": at})
        assert answer.status_code == 200
        return answer.get_json()

    assert _check_spells_against_states(loaded, known_at, spells, ask) > 50
    # Every rule with an action has spells, starting on its first action's day.
    for rule_id in {s["rule_id"] for s in spells}:
        history = client.get(f"/api/v1/rules/{rule_id}/history").get_json()["items"]
        live = [a for a in history if not a["retracted"]]
        first = min(live, key=lambda a: a["effective"])["effective"]
        first_day = (first + "-01-01")[:10] if len(first) == 4 else (first + "-01")[:10]
        assert next(s for s in spells if s["rule_id"] == rule_id)["valid_from"] == first_day


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    """A store holding a generated history (corrections and retractions among its actions)."""
    records = list(HistoryGenerator(actions=900, rules=40, seed=21).records())
    tracker = Tracker(Settings(home=tmp_path_factory.mktemp("research") / "store"))
    tracker.import_records(lambda: iter(records))
    yield tracker, records
    tracker.close()


@pytest.mark.parametrize("moment", ["middle", "end"])
def test_spells_of_a_generated_history_answer_as_the_rules_do(generated, moment):
    tracker, records = generated
    requested = records[len(records) // 2 if moment == "middle" else -1]["recorded_at"]
    known_at, rows = tracker.spells(parse_instant(requested))
    assert known_at == requested
    spells = list(rows)
    assert len({s["rule_id"] for s in spells}) > 10

    def ask(rule_id: str, day: str, at: str) -> dict:
        return tracker.state(rule_id, date.fromisoformat(day), parse_instant(at))

    assert _check_spells_against_states(tracker, known_at, spells, ask) > 500


def test_period_ends_are_calendar_periods_cut_to_the_range():
    def ends(a: str, b: str, every: str) -> list[str]:
        made = list(period_ends(date.fromisoformat(a), date.fromisoformat(b), every))
        assert period_count(date.fromisoformat(a), date.fromisoformat(b), every) == len(made)
        return made

    # 2025-01-01 is a Wednesday: its ISO week ends on Sunday 5 January.
    assert ends("2025-01-01", "2025-01-15", "week") == ["2025-01-05", "2025-01-12", "2025-01-15"]
    assert ends("2024-12-30", "2025-01-05", "week") == ["2025-01-05"]
    assert ends("2024-02-10", "2024-04-30", "month") == ["2024-02-29", "2024-03-31", "2024-04-30"]
    assert ends("2024-11-15", "2025-05-01", "quarter") == ["2024-12-31", "2025-03-31", "2025-05-01"]
    assert ends("2023-06-01", "2025-02-01", "year") == ["2023-12-31", "2024-12-31", "2025-02-01"]
    assert ends("2025-03-30", "2025-04-02", "day") == [
        "2025-03-30", "2025-03-31", "2025-04-01", "2025-04-02"]
    assert ends("2025-01-07", "2025-01-07", "month") == ["2025-01-07"]


@pytest.mark.parametrize("every", ["day", "week", "month", "quarter", "year"])
def test_the_panel_is_balanced_and_each_row_is_the_state_on_its_last_day(generated, every):
    tracker, records = generated
    requested = records[-1]["recorded_at"]
    day_from, day_to = {
        "day": ("2020-02-20", "2020-03-10"), "week": ("2019-12-18", "2020-06-02"),
        "month": ("2018-11-15", "2021-02-10"), "quarter": ("2015-02-01", "2022-07-07"),
        "year": ("2005-06-06", "2026-01-01"),
    }[every]
    known_at, rows = tracker.panel(date.fromisoformat(day_from), date.fromisoformat(day_to),
                                   every, parse_instant(requested))
    panel = list(rows)
    periods = list(period_ends(date.fromisoformat(day_from), date.fromisoformat(day_to), every))
    rules = sorted({r["data"]["id"] for r in records if r["type"] == "timeline.rule.registered"})
    # One row for every rule and period, rules with no action yet included.
    assert [(row["rule_id"], row["period"]) for row in panel] == \
        [(rule, period) for rule in rules for period in periods]
    assert all(list(row) == list(PANEL_COLUMNS) for row in panel)
    previous: dict[str, dict] = {}
    for row in panel:
        state = tracker.state(row["rule_id"], date.fromisoformat(row["period"]),
                              parse_instant(known_at))
        assert {f: row[f] for f in STATE_FIELDS} == {f: state[f] for f in STATE_FIELDS}
        assert row["known_at"] == known_at
        before = previous.get(row["rule_id"])
        assert row["changed"] == (before is not None and any(
            before[f] != row[f] for f in ("status", "rate_percent", "conditions")))
        previous[row["rule_id"]] = row
    assert any(row["changed"] for row in panel) or every == "day"


def test_a_rule_with_no_action_is_in_the_panel_as_none_and_has_no_spells(tracker, client):
    tracker.register_rule({"id": "jp-quiet-rule", "title": "A rule with no action yet",
                           "jurisdiction": "JP", "instrument": "other", "targets": [],
                           "subjects": [], "tags": [], "links": []})
    spells = client.get("/api/v1/spells").get_data(as_text=True)
    assert _csv(spells) == []
    assert spells.startswith(",".join(SPELL_COLUMNS) + "\r\n")
    rows = _jsonl(client.get("/api/v1/panel?from=2025-01-01&to=2025-03-31&every=month"
                             "&format=jsonl").get_data(as_text=True))
    assert [(r["period"], r["status"], r["based_on"], r["changed"]) for r in rows] == [
        ("2025-01-31", "none", [], False), ("2025-02-28", "none", [], False),
        ("2025-03-31", "none", [], False)]


def _register(tracker: Tracker, rule_id: str, title: str, jurisdiction: str = "US",
              instrument: str = "export_control") -> None:
    tracker.register_rule({"id": rule_id, "title": title, "jurisdiction": jurisdiction,
                           "instrument": instrument, "targets": ["CN"],
                           "subjects": ["chips, and more"], "tags": [], "links": []})


def test_a_download_at_known_at_gives_the_same_bytes_whatever_is_recorded_later(tracker, client):
    _register(tracker, "us-chip-rule", "US chip export rule")
    tracker.record_action("us-chip-rule", {"id": "a1", "kind": "restrict", "effective": "2024-03",
                                           "conditions": ["licence"], "sources": [SOURCE]})
    tracker.record_action("us-chip-rule", {"id": "a2", "kind": "fee", "effective": "2024-09-01",
                                           "rate_percent": 25, "sources": [SOURCE]})
    last = tracker.record_action("us-chip-rule", {"id": "a3", "kind": "ease",
                                                  "effective": "2025-01-15", "sources": [SOURCE]})
    known_at = last.recorded_at
    urls = [f"/api/v1/{what}known_at={known_at}&format={fmt}"
            for what in ("spells?", "panel?from=2024-01-01&to=2025-12-31&every=month&")
            for fmt in ("csv", "jsonl")]
    before = [client.get(url).get_data() for url in urls]
    latest_before = client.get("/api/v1/spells?format=jsonl").get_data()
    # After K: more actions, a new rule, a correction and a retraction.
    tracker.record_action("us-chip-rule", {"id": "a4", "kind": "ban", "effective": "2024-06-01",
                                           "sources": [SOURCE]})
    tracker.correct_action("us-chip-rule", "a2", {"rate_percent": 30}, "the notice says 30")
    tracker.retract_action("us-chip-rule", "a3", "recorded in error")
    _register(tracker, "us-later-rule", "A rule registered after K")
    tracker.record_action("us-later-rule", {"id": "b1", "kind": "ban", "effective": "2024-01-01",
                                            "sources": [SOURCE]})
    after = [client.get(url).get_data() for url in urls]
    assert after == before
    assert all(known_at.encode() in body for body in before)
    # Asked as of now, the answer has moved on: the test would see a download that did not hold.
    latest = client.get("/api/v1/spells?format=jsonl").get_data()
    assert latest != latest_before and b"us-later-rule" in latest and b'"a3"' not in latest


def test_filters_choose_rules_as_the_rule_list_does(loaded, client):
    listing = states(loaded, jurisdiction="CN")
    spells = _jsonl(client.get("/api/v1/spells?jurisdiction=CN&format=jsonl").get_data(as_text=True))
    with_actions = {s["rule"]["id"] for s in listing if s["based_on"]}
    assert {s["rule_id"] for s in spells} == with_actions and with_actions
    for name, value in (("instrument", "export_control"), ("q", "gallium"),
                        ("rule", "us-h200-export-licensing-cn")):
        expected = ({s["rule"]["id"] for s in states(loaded, **{name: value})} if name != "rule"
                    else {value})
        panel = _jsonl(client.get(f"/api/v1/panel?from=2025-01-01&to=2025-12-31&every=quarter"
                                  f"&format=jsonl&{name}={value}").get_data(as_text=True))
        assert {r["rule_id"] for r in panel} == expected and expected
        assert len(panel) == 4 * len(expected)


def test_csv_keeps_lists_as_json_arrays_and_formulas_as_text(tracker, client):
    _register(tracker, "us-formula-rule", "=HYPERLINK(\"http://example.com\")")
    tracker.record_action("us-formula-rule", {
        "id": "f1", "kind": "restrict", "effective": "2025-02-03",
        "conditions": ["-1 quota", "ordinary, with \"quotes\""], "sources": [SOURCE]})
    response = client.get("/api/v1/spells")
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    text = response.get_data(as_text=True)
    rows = _csv(text)
    assert list(rows[0]) == list(SPELL_COLUMNS)
    row = rows[0]
    assert row["title"] == "'=HYPERLINK(\"http://example.com\")"
    assert unprotect(row["title"]) == "=HYPERLINK(\"http://example.com\")"
    assert json.loads(row["targets"]) == ["CN"]
    assert json.loads(row["conditions"]) == ["-1 quota", "ordinary, with \"quotes\""]
    assert row["valid_from"] == "2025-02-03" and row["valid_to"] == ""
    assert row["certain"] == "true" and row["rate_percent"] == ""
    assert json.loads(row["based_on"]) == ["f1"]


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'quoted", "plain",
                                  ""])
def test_a_text_cell_reads_back_as_the_text_it_was(text):
    cell = csv_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unprotect(cell) == text
    assert cell == protect(text)


def test_cells_of_other_values():
    assert csv_cell(None) == "" and csv_cell(True) == "true" and csv_cell(False) == "false"
    assert csv_cell(["US", "CN"]) == '["US","CN"]' and csv_cell([]) == "[]"
    assert csv_cell(12.5) == "12.5" and csv_cell(0.1) == "0.1"


@pytest.mark.parametrize("query, field", [
    ("/api/v1/panel?from=2025-02-01&to=2025-01-01&every=month", "from"),
    ("/api/v1/panel?from=2025-01-01&to=2025-02-01&every=fortnight", "every"),
    ("/api/v1/panel?from=2025-01-01&to=2025-02-01", "every"),
    ("/api/v1/panel?to=2025-02-01&every=day", "from"),
    ("/api/v1/panel?from=2025-01&to=2025-02-01&every=day", "from"),
    ("/api/v1/panel?from=2025-01-01&to=2025-02-01&every=day&format=xlsx", "format"),
    ("/api/v1/spells?format=parquet", "format"),
    ("/api/v1/spells?known_at=last-week", "known_at"),
    ("/api/v1/panel?from=2025-01-01&to=2025-02-01&every=day&known_at=2025-13-01T00:00:00Z",
     "known_at"),
    ("/api/v1/spells?jurisdiction=XX", "jurisdiction"),
    ("/api/v1/spells?rule=Not%20A%20Rule", "rule"),
    ("/api/v1/spells?colour=red", "colour"),
])
def test_bad_questions_are_400_problems_before_any_row(loaded, client, query, field):
    response = client.get(query)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 400 and body["title"] and body["detail"] and body["type"]
    assert field in body["errors"]


def test_a_panel_of_more_than_fifty_million_rows_is_refused(loaded, client):
    for n in range(3):
        _register(loaded, f"us-extra-rule-{n}", f"Extra rule {n}")
    # Fourteen rules x 3.65 million days.
    response = client.get("/api/v1/panel?from=0001-01-01&to=9999-12-31&every=day")
    assert response.status_code == 400
    body = response.get_json()
    assert "50,000,000" in body["detail"] and body["errors"]
    # The same days for one rule are fewer rows than that: it is answered.
    response = client.get("/api/v1/panel?from=0001-01-01&to=9999-12-31&every=year"
                          "&rule=us-h200-export-licensing-cn&format=jsonl")
    assert response.status_code == 200
    rows = _jsonl(response.get_data(as_text=True))
    assert len(rows) == 9999 and rows[-1]["period"] == "9999-12-31"


def test_downloads_are_streamed(loaded, client):
    response = client.get("/api/v1/spells")
    assert response.is_streamed
    assert response.status_code == 200
    response.close()


def test_both_downloads_are_in_the_openapi_document(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    for path, names in (("/api/v1/spells", {"known_at", "jurisdiction", "instrument", "rule", "q",
                                             "format"}),
                        ("/api/v1/panel", {"from", "to", "every", "known_at", "jurisdiction",
                                           "instrument", "rule", "q", "format"})):
        operation = doc["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == names
        assert set(operation["responses"]["200"]["content"]) == {"text/csv", "application/x-ndjson"}
        assert "400" in operation["responses"]


def test_the_command_line_writes_what_the_api_sends(loaded, client, runner, tmp_path):
    from timeline.cli import main

    known_at = _jsonl(client.get("/api/v1/spells?format=jsonl").get_data(as_text=True))[0]["known_at"]
    out = tmp_path / "spells.csv"
    result = runner.invoke(main, ["spells", "--known-at", known_at, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == client.get(f"/api/v1/spells?known_at={known_at}").get_data()
    result = runner.invoke(main, ["panel", "--from", "2025-01-01", "--to", "2025-06-30",
                                  "--every", "week", "--known-at", known_at, "--format", "jsonl",
                                  "--jurisdiction", "US"])
    assert result.exit_code == 0, result.output
    assert result.output.encode() == client.get(
        f"/api/v1/panel?from=2025-01-01&to=2025-06-30&every=week&known_at={known_at}"
        "&format=jsonl&jurisdiction=US").get_data()


@pytest.mark.parametrize("args, message", [
    (["panel", "--from", "2025-02-01", "--to", "2025-01-01", "--every", "month"], "after"),
    (["panel", "--from", "2025-01-01", "--to", "2025-02-01", "--every", "hour"], "--every"),
    (["spells", "--known-at", "soon"], "--known-at"),
    (["spells", "--jurisdiction", "XX"], "--jurisdiction"),
    (["spells", "--format", "xml"], "--format"),
    (["panel", "--from", "0001-01-01", "--to", "9999-12-31", "--every", "day"], "50,000,000"),
])
def test_the_command_line_refuses_bad_questions_in_one_clear_line(loaded, runner, args, message):
    from timeline.cli import main

    for n in range(3):  # fourteen rules: a panel of every day of the calendar is too long
        _register(loaded, f"us-extra-rule-{n}", f"Extra rule {n}")
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
