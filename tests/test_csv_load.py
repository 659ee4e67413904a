"""timeline load with CSV files of rules and of actions, as spreadsheets write them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, strategies as st

from timeline.cli import main
from timeline.service import Tracker
from timeline.spreadsheet import list_cell, protect, unprotect

from tests.conftest import REPO

EXAMPLES = REPO / "examples" / "csv"
RULE = "us-h200-export-licensing-cn"
EU_RULE = "eu-bev-countervailing-duties-cn"


def load(runner: CliRunner, *paths: Path | str, code: int = 0) -> Result:
    result = runner.invoke(main, ["load", *map(str, paths)])
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def spreadsheet_cell(value: Any) -> str:
    """A value as a spreadsheet saves it after a user opened a download: lists and objects as
    the download's JSON, booleans as TRUE/FALSE, formula-like text guarded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (list, dict)):
        return list_cell(value) if isinstance(value, list) else json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return protect(str(value))


def write_spreadsheet_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> Path:
    """As "CSV UTF-8" from a spreadsheet: a byte order mark, CRLF, every cell quoted."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([spreadsheet_cell(row.get(name)) for name in header])
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    return path


def history_rows(tracker: Tracker, rule_id: str) -> tuple[list[str], list[dict]]:
    """GET /api/v1/rules/<id>/history flattened: one row per item, every field a column."""
    _, items = tracker.history(rule_id)
    header: list[str] = []
    for item in items:
        header.extend(name for name in item if name not in header)
    return header, items


# The example pair ----------------------------------------------------------------------------


def test_the_example_pair_loads_and_loading_it_again_adds_nothing(runner: CliRunner,
                                                                  tracker: Tracker):
    result = load(runner, EXAMPLES / "rules.csv", EXAMPLES / "actions.csv")
    assert "1 rule(s) and 2 action(s) added" in result.output
    result = load(runner, EXAMPLES)  # the folder, both files
    assert "0 rule(s) and 0 action(s) added" in result.output
    state = tracker.state(EU_RULE)
    assert (state["status"], state["rate_percent"], state["conditions"]) == ("in_force", 35.3, [])
    _, history = tracker.history(EU_RULE)
    assert [item["id"] for item in history] == ["eu-bev-provisional", "eu-bev-definitive"]
    assert history[0]["conditions"] == ["Provisional: collected only if definitive duties follow"]
    assert history[0]["sources"] == [{
        "title": "Commission Implementing Regulation (EU) 2024/1866",
        "url": "https://eur-lex.europa.eu/eli/reg_impl/2024/1866/oj",
        "publisher": "European Commission", "published": "2024-07-04"}]
    assert tracker.state(EU_RULE)["rule"]["subjects"] == ["battery electric vehicles"]


# Errors name the file, the row and the column, and nothing is stored -----------------------

ACTION_HEADER = "rule,id,kind,effective,rate_percent,until,conditions,source_title,source_url"
GOOD_ROW = f"{EU_RULE},a1,fee,2024-07,10,,,Notice,"


@pytest.mark.parametrize("row, column, message", [
    (f"{EU_RULE},a2,fee,2024-08,25%,,,Notice,", "rate_percent", "must be a number"),
    (f"{EU_RULE},a2,ban,2024-08,25,,,Notice,", "rate_percent", "is only allowed on a fee"),
    (f"{EU_RULE},a2,forbid,2024-08,,,,Notice,", "kind", "Must be one of"),
    (f"{EU_RULE},a2,ban,2024-13,,,,Notice,", "effective", "2024-13"),
    (f"{EU_RULE},a2,pause,2024-08,,2024-07,,Notice,", "until", "must start after"),
    (f"{EU_RULE},a2,ban,2024-08,,,\"[\"\"a\"\"\",Notice,", "conditions", "JSON array"),
    (f"{EU_RULE},a2,ban,2024-08,,,,Notice,ftp://x", "source_url", "Not a valid URL"),
    (f"{EU_RULE},a2,ban,2024-08,,,,,", "source_title", "needs a source"),
    (f"{EU_RULE},,ban,2024-08,,,,Notice,", "id", "needs an id"),
    ("no-such-rule,a2,ban,2024-08,,,,Notice,", "rule", "no rule 'no-such-rule'"),
    (f"{EU_RULE},a1,ban,2024-08,,,,Notice,", None, "more than once"),
])
def test_a_bad_row_is_named_and_nothing_from_the_files_is_stored(
        runner: CliRunner, tracker: Tracker, tmp_path: Path, row: str, column: str | None,
        message: str):
    actions = tmp_path / "actions.csv"
    actions.write_text("\n".join([ACTION_HEADER, GOOD_ROW, "", row]) + "\n", encoding="utf-8")
    result = load(runner, EXAMPLES / "rules.csv", actions, code=1)
    where = f"{actions}, row 4" + (f", column {column}" if column else "")
    assert where in result.output
    assert message in result.output
    assert not tracker.rule_exists(EU_RULE)


@pytest.mark.parametrize("text, problem", [
    ("id,title,jurisdiction,instrument,colour\nx,y,US,other,red\n",
     "row 1, column colour: is not a column of a rules file"),
    ("id,title,jurisdiction,instrument,targets\nabc-rule,T,US,other,\"[\"\"US\"\",\"\"XX\"\"]\"\n",
     "row 2, column targets: 'XX' is not an ISO 3166-1 alpha-2 code"),
    ("id,title,jurisdiction,instrument\nabc-rule,T,US,other,extra\n",
     "row 2: has more cells than the header"),
    ("id,name\nabc,def\n", "neither a CSV of actions (it would have a kind column) nor one of "
                           "rules (a title column)"),
    ("id,kind,effective\nx,ban,2024\n", "an actions file needs a rule column"),
    ("id,title,jurisdiction,instrument\n", "has a header but no rows"),
    ("id,title,jurisdiction,instrument\nabc,\"T\"x,US,other\n",
     "line 2: is not readable as CSV"),
])
def test_files_that_cannot_be_read_say_why(runner: CliRunner, tmp_path: Path, text: str,
                                           problem: str):
    path = tmp_path / "sheet.csv"
    path.write_text(text, encoding="utf-8")
    result = load(runner, path, code=1)
    assert f"{path}" in result.output and problem in result.output


def test_a_file_that_is_not_utf8_is_refused(runner: CliRunner, tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,title,jurisdiction,instrument\nabc,Zölle,DE,other\n".encode("latin-1"))
    assert "is not UTF-8 text" in load(runner, path, code=1).output


# Spreadsheets ---------------------------------------------------------------------------------


def test_a_file_saved_by_a_spreadsheet_reads_back_exactly(runner: CliRunner, tracker: Tracker,
                                                          tmp_path: Path):
    rules = write_spreadsheet_csv(tmp_path / "rules.csv", [
        "id", "title", "jurisdiction", "instrument", "targets", "subjects", "tags", "links", ""],
        [{"id": "jp-photoresist-export-review", "title": "=Japan, photoresist exports: review",
          "jurisdiction": "JP", "instrument": "export_control", "targets": "KR",
          "subjects": ["photoresist", "fluorinated polyimide"], "tags": None, "links": None}])
    summary = 'Line one, with "quotes".\nLine two: +5% more.'
    actions = write_spreadsheet_csv(tmp_path / "actions.csv", [
        "rule", "id", "kind", "effective", "announced", "rate_percent", "conditions", "summary",
        "source_title", "source_publisher", "source_quote"],
        [{"rule": "jp-photoresist-export-review", "id": "jp-restrict-2019", "kind": "restrict",
          "effective": "2019-07-04", "conditions": ["=licence per shipment", "@review"],
          "summary": summary, "source_title": "-METI notice-", "source_publisher": "METI",
          "source_quote": "'quoted' as written"},
         {"rule": "jp-photoresist-export-review", "id": "jp-ease-2019-12", "kind": "ease",
          "effective": "2019-12", "conditions": "General licence for one exporter",
          "summary": "'=already quoted", "source_title": "METI"}])
    # A spreadsheet adds blank rows and empty trailing cells now and then.
    with open(actions, "a", encoding="utf-8", newline="") as stream:
        stream.write(",,,,,,,,,,\r\n\r\n")
    assert "1 rule(s) and 2 action(s) added" in load(runner, rules, actions).output
    assert "0 rule(s) and 0 action(s) added" in load(runner, rules, actions).output

    rule = tracker.state("jp-photoresist-export-review")["rule"]
    assert rule["title"] == "=Japan, photoresist exports: review"
    assert (rule["targets"], rule["subjects"], rule["tags"], rule["links"]) == (
        ["KR"], ["photoresist", "fluorinated polyimide"], [], [])
    _, (first, second) = tracker.history("jp-photoresist-export-review")
    assert first["conditions"] == ["=licence per shipment", "@review"]
    assert first["summary"] == summary
    assert first["sources"] == [{"title": "-METI notice-", "publisher": "METI",
                                 "quote": "'quoted' as written"}]
    assert "announced" not in first and "rate_percent" not in first  # empty cells: not given
    assert second["conditions"] == ["General licence for one exporter"]
    assert second["summary"] == "'=already quoted"


def test_rules_link_to_rules_in_the_files_or_the_store(runner: CliRunner, loaded: Tracker,
                                                      tmp_path: Path):
    path = tmp_path / "rules.csv"
    path.write_text(
        "id,title,jurisdiction,instrument,links,tags\n"
        'cn-counter-rule,"  A counter-measure, spaced ",CN,sanction,"[{""rule"": ""'
        + RULE + '"", ""relation"": ""retaliates_against""}]", semiconductors \n'
        'cn-second-rule,Another,CN,other,"[{""rule"": ""cn-counter-rule"", ""relation"": '
        '""amends""}]",\n', encoding="utf-8")
    assert "2 rule(s) and 0 action(s) added" in load(runner, path).output
    rule = loaded.state("cn-counter-rule")["rule"]
    assert rule["links"] == [{"rule": RULE, "relation": "retaliates_against"}]
    assert rule["title"] == "  A counter-measure, spaced "  # text is kept as written
    assert rule["tags"] == ["semiconductors"]  # a tag is trimmed, as codes and dates are
    assert loaded.state("cn-second-rule")["rule"]["links"][0]["rule"] == "cn-counter-rule"
    bad = tmp_path / "bad.csv"
    bad.write_text('id,title,jurisdiction,instrument,links\nabc-rule,T,CN,other,"[{""rule"": '
                   '""abc-none"", ""relation"": ""amends""}]"\n', encoding="utf-8")
    assert "no rule 'abc-none' in these files or in the store" in load(runner, bad, code=1).output


def test_an_exported_history_edited_in_a_spreadsheet_comes_back(
        runner: CliRunner, loaded: Tracker, tmp_path: Path,
        use_empty_store: Callable[[Path], None]):
    loaded.correct_action(RULE, "us-h200-fee-25-2025-12-08", {"rate_percent": 15.0}, "15%.")
    loaded.retract_action(RULE, "us-h200-restricted-2022", "Recorded in error.")
    header, items = history_rows(loaded, RULE)
    assert {"rule_id", "recorded_at", "corrections", "retracted", "original"} <= set(header)
    exported = write_spreadsheet_csv(tmp_path / "history.csv", header, items)

    # As it was: nothing new, the corrected and the retracted actions included.
    assert "0 rule(s) and 0 action(s) added" in load(runner, exported).output

    # A row added by the user is recorded; the others are still nothing new.
    added = {"rule_id": RULE, "id": "us-h200-lift-2026", "kind": "lift", "effective": "2026-03",
             "summary": "Lifted.", "sources": [{"title": "A later notice"}]}
    edited = write_spreadsheet_csv(tmp_path / "edited.csv", header, [*items, added])
    assert "0 rule(s) and 1 action(s) added" in load(runner, edited).output
    assert loaded.state(RULE)["status"] == "lifted"

    # A recorded action changed in the sheet is refused, naming its row: that is a correction.
    changed = [dict(item) for item in items]
    changed[1]["summary"] = "Rewritten."
    path = write_spreadsheet_csv(tmp_path / "changed.csv", header, changed)
    result = load(runner, path, code=1)
    assert f"{path}, row 3: action {items[1]['id']!r} is already recorded" in result.output

    # Into another store: a retracted action is not recorded anew, and says which row.
    use_empty_store(tmp_path / "other")
    rules = write_spreadsheet_csv(tmp_path / "rule.csv", [
        "id", "title", "jurisdiction", "instrument", "targets", "subjects", "tags"],
        [loaded.state(RULE)["rule"]])
    result = load(runner, rules, exported, code=1)
    row = 2 + next(i for i, item in enumerate(items) if item["retracted"])
    assert f"{exported}, row {row}, column retracted: a retracted action" in result.output
    kept = write_spreadsheet_csv(tmp_path / "kept.csv", header,
                                 [item for item in items if not item["retracted"]])
    assert "1 rule(s) and 2 action(s) added" in load(runner, rules, kept).output


def test_an_exported_timeline_comes_back_as_nothing_new(runner: CliRunner, loaded: Tracker,
                                                        tmp_path: Path):
    items, _ = loaded.timeline(limit=1000)
    header: list[str] = []
    for item in items:
        header.extend(name for name in item if name not in header)
    assert "rule_title" in header and "targets" in header
    path = write_spreadsheet_csv(tmp_path / "timeline.csv", header, items)
    assert "0 rule(s) and 0 action(s) added" in load(runner, path).output


def test_a_spells_download_edited_in_a_spreadsheet_comes_back_as_its_rules(
        runner: CliRunner, loaded: Tracker, tmp_path: Path):
    """A spells (or panel) download reads back as its rules: unchanged rows add nothing, a rule
    added by the user is registered, and a rule's fields changed in the sheet are refused."""
    from timeline.web import create_app

    client = create_app({"TESTING": True}, tracker=loaded).test_client()
    text = client.get("/api/v1/spells").get_data(as_text=True)
    spells = list(csv.DictReader(io.StringIO(text)))
    header = list(spells[0])
    rows = [{k: (json.loads(v) if v.startswith("[") else unprotect(v)) for k, v in row.items()}
            for row in spells]
    path = write_spreadsheet_csv(tmp_path / "spells.csv", header, rows)
    assert "0 rule(s) and 0 action(s) added" in load(runner, path).output

    added = {**rows[0], "rule_id": "jp-new-rule-from-sheet", "title": "A rule typed in a sheet",
             "jurisdiction": "JP", "targets": ["CN"], "subjects": ["gallium"]}
    path = write_spreadsheet_csv(tmp_path / "edited.csv", header, [*rows, added])
    assert "1 rule(s) and 0 action(s) added" in load(runner, path).output
    rule = loaded.state("jp-new-rule-from-sheet")["rule"]
    assert (rule["title"], rule["targets"], rule["subjects"]) == (
        "A rule typed in a sheet", ["CN"], ["gallium"])

    first = rows[0]["rule_id"]
    changed = [{**row, "title": "Retitled in the sheet"} if row["rule_id"] == first else row
               for row in rows]
    path = write_spreadsheet_csv(tmp_path / "changed.csv", header, changed)
    result = load(runner, path, code=1)
    assert f"{path}, row 2: rule {first!r}" in result.output
    assert "already registered with other fields" in result.output

    # Two rows of one rule that disagree: the later one is named.
    index = next(i for i in range(1, len(rows)) if rows[i]["rule_id"] == rows[i - 1]["rule_id"])
    disagreeing = [dict(row) for row in rows]
    disagreeing[index]["title"] = "Retitled in one row"
    path = write_spreadsheet_csv(tmp_path / "disagreeing.csv", header, disagreeing)
    result = load(runner, path, code=1)
    assert (f"{path}, row {index + 2}: rule {rows[index]['rule_id']!r} is not as in {path}, "
            f"row {index + 1}") in result.output
    assert loaded.state(rows[0]["rule_id"])["rule"]["title"] == rows[0]["title"]


# The cell rule shared with the downloads --------------------------------------------------------


@given(st.text())
def test_a_protected_cell_reads_back_as_the_text_written(text: str):
    cell = protect(text)
    assert unprotect(cell) == text
    assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize("text, cell", [
    ("=SUM(A1)", "'=SUM(A1)"), ("-5", "'-5"), ("'=x", "''=x"), ("'plain", "'plain"),
    ("plain", "plain"), ("", ""), ("'", "'"),
])
def test_cells_are_guarded_only_where_a_spreadsheet_would_run_them(text: str, cell: str):
    assert protect(text) == cell
    assert unprotect(cell) == text
