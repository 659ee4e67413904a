"""The ``timeline`` command, through click's runner and once as a real process.

Every error must be one clear line (exit status 1 for bad input, 2 for bad usage), never a
traceback, and ``--json`` must print exactly what the tracker gives the API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any, Callable

import click
import pytest
from click.testing import CliRunner, Result

from timeline.cli import main
from timeline.config import Settings
from timeline.domain.dates import parse_instant
from timeline.service import Tracker

from tests.conftest import FIXTURES
from tests.listings import diff, states

H200 = "us-h200-export-licensing-cn"
AS_OF = "2025-12-09"


def run(runner: CliRunner, *args: str, code: int = 0) -> Result:
    result = runner.invoke(main, list(args))
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def load_bundled(runner: CliRunner) -> Result:
    return run(runner, "load", *sorted(str(p) for p in FIXTURES.iterdir()))


def json_of(result: Result) -> Any:
    return json.loads(result.stdout)


def known_at_of(payload: dict) -> Any:
    return parse_instant(payload["known_at"])


# Help --------------------------------------------------------------------------------------


def all_commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


def test_the_contracts_commands_exist():
    names = {" ".join(path) for path, _ in all_commands(main)}
    assert {"load", "state", "history", "diff", "export", "import", "rebuild",
            "token create"} <= names


@pytest.mark.parametrize("path, command", list(all_commands(main)),
                         ids=[" ".join(p) for p, _ in all_commands(main)])
def test_every_command_and_option_has_help_text(runner: CliRunner, path, command):
    assert command.help and command.help.strip(), f"{' '.join(path)} has no help"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
    result = run(runner, *path, "--help")
    assert result.stdout.startswith("Usage: ")
    first_words = " ".join(command.help.split()[:5])
    assert first_words in " ".join(result.stdout.split())


def test_the_top_level_help_lists_every_command_and_the_settings(runner: CliRunner):
    result = run(runner, "--help")
    for name in ("load", "state", "history", "diff", "export", "import", "rebuild", "token"):
        assert f"  {name} " in result.stdout
    assert "TIMELINE_HOME" in result.stdout and "TIMELINE_DATABASE_URL" in result.stdout
    assert run(runner, "-h").stdout == result.stdout


def test_version(runner: CliRunner):
    assert run(runner, "--version").stdout.startswith("timeline, version ")


def test_an_unknown_command_is_a_usage_error(runner: CliRunner):
    result = run(runner, "stat", code=2)
    assert "No such command 'stat'" in result.output


# load ------------------------------------------------------------------------------------


def test_load_reports_what_it_added_and_adds_nothing_the_second_time(runner: CliRunner):
    first = load_bundled(runner)
    files = len(list(FIXTURES.iterdir()))
    assert first.stdout.startswith(f"Loaded {files} file(s): 11 rule(s) and ")
    again = load_bundled(runner)
    assert again.stdout.strip() == f"Loaded {files} file(s): 0 rule(s) and 0 action(s) added."


def test_load_takes_a_folder(runner: CliRunner):
    result = run(runner, "load", str(FIXTURES))
    assert "11 rule(s)" in result.stdout


def test_load_names_a_missing_file(runner: CliRunner, tmp_path: Path):
    result = run(runner, "load", str(tmp_path / "nope.yaml"), code=2)
    assert "nope.yaml" in result.output and "does not exist" in result.output


def test_load_needs_a_path(runner: CliRunner):
    result = run(runner, "load", code=2)
    assert "Missing argument" in result.output


def test_a_bad_fixture_is_one_line_naming_file_rule_and_field_and_stores_nothing(
    runner: CliRunner, tracker: Tracker, tmp_path: Path,
):
    bad = tmp_path / "bad.yaml"
    bad.write_text((FIXTURES / f"{H200}.yaml").read_text(encoding="utf-8").replace(
        "rate_percent: 25", "rate_percent: 2500"), encoding="utf-8")
    result = run(runner, "load", str(FIXTURES), str(bad), code=1)
    message = result.stderr.strip()
    assert message.startswith(f"Error: {bad}: rule '{H200}', action 'us-h200-fee-25-2025-12-08'")
    assert "rate_percent" in message
    assert len(message.splitlines()) == 1
    assert tracker.head() == 0
    assert run(runner, "state").stdout.strip() == "No rules."


# state -----------------------------------------------------------------------------------


def test_state_prints_every_rule_as_the_article_says(runner: CliRunner):
    load_bundled(runner)
    lines = run(runner, "state", "--as-of", AS_OF).stdout.splitlines()
    assert lines[0].startswith(f"as of {AS_OF}, known at ")
    assert f"{H200}  eased  25%  since 2025-12-08" in lines
    assert "    - Sales only to approved customers vetted by the US Commerce Department" in lines
    starts = lambda text: any(line.startswith(text) for line in lines)  # noqa: E731
    assert starts("us-fentanyl-tariff-cn  in_force  10%  since 2025")
    assert starts("cn-rare-earth-export-restrictions  paused  since 2025  until 2026")
    assert "us-safe-chips-bill  proposed  since 2025-12-04" in lines
    rule_ids = [line.split()[0] for line in lines[1:] if not line.startswith("    ")]
    assert rule_ids == sorted(rule_ids) and len(rule_ids) == 11


def test_state_json_is_the_apis_list_of_states(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    payload = json_of(run(runner, "state", "--as-of", AS_OF, "--json"))
    assert set(payload) == {"items"}
    known_at = known_at_of(payload["items"][0])
    assert payload == {"items": states(tracker, date(2025, 12, 9), known_at)}
    state = payload["items"][0]
    assert set(state) == {"rule", "as_of", "known_at", "status", "rate_percent", "conditions",
                          "since", "until", "certain", "uncertain_because", "based_on",
                          "version"}


def test_state_of_one_rule_json_is_the_apis_state(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    payload = json_of(run(runner, "state", H200, "--as-of", AS_OF, "--json"))
    assert payload == tracker.state(H200, date(2025, 12, 9), known_at_of(payload))
    assert (payload["status"], payload["rate_percent"]) == ("eased", 25)
    text = run(runner, "state", H200, "--as-of", AS_OF).stdout.splitlines()
    assert text[1] == f"{H200}  eased  25%  since 2025-12-08"


def test_state_asked_again_at_the_echoed_instant_gives_the_same_answer(
    runner: CliRunner, tracker: Tracker,
):
    load_bundled(runner)
    first = json_of(run(runner, "state", H200, "--as-of", AS_OF, "--json"))
    tracker.correct_action(H200, "us-h200-fee-25-2025-12-08", {"rate_percent": 15}, "typo")
    again = json_of(run(runner, "state", H200, "--as-of", first["as_of"], "--known-at",
                        first["known_at"], "--json"))
    assert again == first
    latest = json_of(run(runner, "state", H200, "--as-of", AS_OF, "--json"))
    assert (latest["rate_percent"], latest["version"]) == (15, first["version"] + 1)


def test_state_filters(runner: CliRunner):
    load_bundled(runner)
    ids = lambda *args: [s["rule"]["id"] for s in json_of(  # noqa: E731
        run(runner, "state", "--as-of", AS_OF, "--json", *args))["items"]]
    assert set(ids("--jurisdiction", "CN")) == {
        "cn-fentanyl-precursor-export-controls", "cn-gallium-germanium-export-licensing",
        "cn-h200-purchase-approvals", "cn-nvidia-h20-purchase-ban", "cn-rare-earth-embargo-jp",
        "cn-rare-earth-export-restrictions", "cn-us-soybean-purchases"}
    assert ids("--instrument", "import_tariff") == ["us-fentanyl-tariff-cn"]
    assert ids("-q", "H200") == ["cn-h200-purchase-approvals", H200]
    assert ids("-q", "soybeans") == ["cn-us-soybean-purchases"]


def test_state_before_anything_was_known(runner: CliRunner):
    load_bundled(runner)
    assert run(runner, "state", "--known-at", "2000-01-01T00:00:00Z").stdout.strip() == "No rules."
    result = run(runner, "state", H200, "--known-at", "2000-01-01T00:00:00Z", code=1)
    assert f"No rule '{H200}' was registered at 2000-01-01T00:00:00.000000Z" in result.stderr


def test_state_of_an_empty_store(runner: CliRunner):
    assert run(runner, "state").stdout.strip() == "No rules."
    assert json_of(run(runner, "state", "--json")) == {"items": []}


def test_state_of_an_unknown_rule_is_one_line(runner: CliRunner):
    result = run(runner, "state", "nope-rule", code=1)
    assert result.stderr.startswith("Error: No rule 'nope-rule' was registered at ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, option", [
    (["state", "--as-of", "2025-13-01"], "--as-of"),
    (["state", "--as-of", "2025-12"], "--as-of"),
    (["state", "--as-of", "9 December"], "--as-of"),
    (["state", "--known-at", "yesterday"], "--known-at"),
    (["state", "--known-at", "2025-12-09T00:00:00"], "--known-at"),
    (["history", H200, "--known-at", "2025-12-09"], "--known-at"),
    (["diff", "2025-12-01", "tomorrow"], "TO"),
    (["diff", "2025", "2025-12-09"], "FROM"),
    (["diff", "2025-12-01"], "TO"),
])
def test_bad_days_and_instants_are_usage_errors(runner: CliRunner, args: list[str], option: str):
    result = run(runner, *args, code=2)
    assert option in result.stderr
    assert "Invalid value" in result.stderr or "Missing argument" in result.stderr


# history ---------------------------------------------------------------------------------


def test_history_shows_actions_in_effective_order_with_sources_and_quotes(runner: CliRunner):
    load_bundled(runner)
    lines = run(runner, "history", H200).stdout.splitlines()
    entries = [line for line in lines if not line.startswith(" ")]
    assert [e.split()[0] for e in entries] == ["2022", "2025-12-08", "2025-12-08"]
    assert "2025-12-08  fee 25%  [us-h200-fee-25-2025-12-08]" in entries
    assert any("\u201cOn December 8, President Donald Trump announced" in line for line in lines)
    assert "    condition: Sales only to approved customers vetted by the US Commerce Department" \
        in lines


def test_history_shows_corrections_and_retractions(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    tracker.correct_action(H200, "us-h200-fee-25-2025-12-08", {"rate_percent": 15}, "typo")
    tracker.retract_action(H200, "us-h200-restricted-2022", "recorded in error")
    text = run(runner, "history", H200).stdout
    assert re.search(r"corrected \S+Z: rate_percent: 25(\.0)? -> 15 \(typo\)", text)
    assert "2022        RETRACTED restrict" in text
    assert "retracted " in text and ": recorded in error" in text


def test_history_json_is_the_apis(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    tracker.retract_action(H200, "us-h200-restricted-2022", "recorded in error")
    payload = json_of(run(runner, "history", H200, "--json"))
    at, items = tracker.history(H200, known_at_of(payload))
    assert payload == {"items": items, "known_at": at}
    assert payload["items"][0]["retracted"] is True


def test_history_of_an_unknown_rule(runner: CliRunner):
    result = run(runner, "history", "nope-rule", code=1)
    assert result.stderr.startswith("Error: No rule 'nope-rule'")
    assert run(runner, "history", code=2).exit_code == 2


def test_history_of_a_rule_without_actions(runner: CliRunner, tracker: Tracker):
    tracker.register_rule({"id": "empty-rule", "title": "Empty", "jurisdiction": "EU",
                           "instrument": "other", "targets": [], "subjects": [], "tags": [],
                           "links": []})
    assert run(runner, "history", "empty-rule").stdout.strip() == "No actions."


# diff ------------------------------------------------------------------------------------


def test_diff_lists_what_changed_between_two_days(runner: CliRunner):
    load_bundled(runner)
    lines = run(runner, "diff", "2025-12-01", AS_OF).stdout.splitlines()
    assert lines == [f"{H200}: restricted -> eased 25%", "us-safe-chips-bill: none -> proposed"]
    tariff = run(runner, "diff", "2025-09-30", "2025-10-01").stdout.splitlines()
    assert tariff == ["cn-fentanyl-precursor-export-controls: none -> proposed",
                      "us-fentanyl-tariff-cn: in_force 20% -> in_force 10%"]
    assert run(runner, "diff", AS_OF, AS_OF).stdout.strip() == "No changes."


def test_diff_json_is_the_apis(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    payload = json_of(run(runner, "diff", "2025-12-01", AS_OF, "--json"))
    at, changes = diff(tracker, date(2025, 12, 1), date(2025, 12, 9), known_at_of(payload))
    assert payload == {"changes": changes, "from": "2025-12-01", "to": AS_OF, "known_at": at}
    assert [c["rule_id"] for c in changes] == [H200, "us-safe-chips-bill"]
    filtered = json_of(run(runner, "diff", "2025-12-01", AS_OF, "--json",
                           "--instrument", "legislation"))
    assert [c["rule_id"] for c in filtered["changes"]] == ["us-safe-chips-bill"]


# export and import -----------------------------------------------------------------------


def test_export_prints_every_event_as_json_lines_in_position_order(
    runner: CliRunner, tracker: Tracker,
):
    load_bundled(runner)
    out = run(runner, "export").stdout
    lines = out.splitlines()
    assert out.endswith("\n")
    assert lines == list(tracker.export())
    assert len(lines) == tracker.head()
    records = [json.loads(line) for line in lines]
    assert [r["recorded_at"] for r in records] == sorted(r["recorded_at"] for r in records)
    assert {r["type"] for r in records} == {"timeline.rule.registered",
                                            "timeline.action.recorded"}


def test_export_of_an_empty_store_is_empty(runner: CliRunner):
    assert run(runner, "export").stdout == ""


def test_export_to_a_file_then_import_into_an_empty_store_round_trips(
    runner: CliRunner, tracker: Tracker, tmp_path: Path, use_empty_store: Callable[[Path], None],
):
    load_bundled(runner)
    tracker.correct_action(H200, "us-h200-fee-25-2025-12-08", {"summary": "Fee."}, "shorter")
    first = tmp_path / "first.jsonl"
    assert run(runner, "export", "--out", str(first)).stdout == ""
    before = json_of(run(runner, "state", "--as-of", AS_OF, "--json"))

    use_empty_store(tmp_path / "restored")
    count = len(first.read_text(encoding="utf-8").splitlines())
    assert run(runner, "import", str(first)).stdout.strip() == (
        f"Imported {count} event(s) from {first}.")
    second = tmp_path / "second.jsonl"
    run(runner, "export", "--out", str(second))
    assert second.read_bytes() == first.read_bytes()
    after = json_of(run(runner, "state", "--as-of", AS_OF, "--known-at",
                        before["items"][0]["known_at"], "--json"))
    assert after == before


def test_import_refuses_a_store_that_is_not_empty(
    runner: CliRunner, tracker: Tracker, tmp_path: Path,
):
    load_bundled(runner)
    export = tmp_path / "export.jsonl"
    run(runner, "export", "--out", str(export))
    head = tracker.head()
    result = run(runner, "import", str(export), code=1)
    assert result.stderr.strip() == (
        f"Error: {export}: The store already holds events; import needs an empty store.")
    assert tracker.head() == head


@pytest.mark.parametrize("content, words", [
    ("not json\n", ["line 1 is not JSON"]),
    ('{"type": "timeline.rule.registered"}\n[1]\n', ["line 1"]),
    ("[1]\n", ["line 1 is not a JSON object"]),
    ('{"type": "timeline.rule.registered", "rule_id": "x-rule", "version": 1, '
     '"recorded_at": "2025-01-01T00:00:00.000000Z", "data": 5}\n', ["line 1", "data object"]),
])
def test_import_names_the_bad_line_and_stores_nothing(
    runner: CliRunner, tracker: Tracker, tmp_path: Path, content: str, words: list[str],
):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = run(runner, "import", str(path), code=1)
    assert result.stderr.startswith(f"Error: {path}: ")
    for word in words:
        assert word in result.stderr
    assert tracker.head() == 0


def test_import_of_a_broken_event_names_file_and_line(
    runner: CliRunner, tracker: Tracker, tmp_path: Path, use_empty_store: Callable[[Path], None],
):
    load_bundled(runner)
    lines = list(tracker.export())
    record = json.loads(lines[-1])
    record["data"]["rate_percent"] = 5  # on an action that is not a fee
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n", encoding="utf-8")
    use_empty_store(tmp_path / "other")
    result = run(runner, "import", str(path), code=1)
    assert result.stderr.startswith(f"Error: {path}: line {len(lines)}: ")
    assert run(runner, "export").stdout == ""


def test_import_of_a_missing_file_is_a_usage_error(runner: CliRunner, tmp_path: Path):
    result = run(runner, "import", str(tmp_path / "none.jsonl"), code=2)
    assert "does not exist" in result.stderr


# rebuild ---------------------------------------------------------------------------------


def test_rebuild_shows_progress_and_gives_the_same_answers(runner: CliRunner, tracker: Tracker):
    load_bundled(runner)
    tracker.retract_action(H200, "us-h200-restricted-2022", "recorded in error")
    before = json_of(run(runner, "state", "--as-of", "2024-01-01", "--json"))
    history = json_of(run(runner, "history", H200, "--json"))
    result = run(runner, "rebuild")
    assert "Rebuilding read models" in result.stderr
    assert result.stdout.strip() == f"Rebuilt read models up to position {tracker.head()}."
    at = before["items"][0]["known_at"]
    assert json_of(run(runner, "state", "--as-of", "2024-01-01", "--known-at", at,
                       "--json")) == before
    assert json_of(run(runner, "history", H200, "--known-at", history["known_at"],
                       "--json")) == history


def test_rebuild_of_an_empty_store(runner: CliRunner):
    assert run(runner, "rebuild").stdout.strip() == "Rebuilt read models up to position 0."


# tokens and settings ---------------------------------------------------------------------


def test_token_create_prints_the_token_once_as_the_last_line(runner: CliRunner):
    result = run(runner, "token", "create", "ci")
    token = result.stdout.strip().splitlines()[-1]
    assert len(token) >= 20 and " " not in token
    assert "not shown again" in result.stderr
    other = run(runner, "token", "create", "ci-2").stdout.strip().splitlines()[-1]
    assert other != token


def test_a_bad_database_url_is_one_clear_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TIMELINE_DATABASE_URL", "mysql://localhost/timeline")
    for args in (["state"], ["export"], ["load", str(FIXTURES)], ["token", "create", "x"]):
        result = run(runner, *args, code=1)
        assert result.stderr.startswith("Error: TIMELINE_DATABASE_URL must be")


# As a real process -------------------------------------------------------------------------


def test_the_installed_command_loads_the_fixtures_and_answers(tmp_path: Path):
    env = {**os.environ, "TIMELINE_HOME": str(tmp_path / "home")}
    env.pop("TIMELINE_DATABASE_URL", None)

    def timeline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "timeline", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    loaded = timeline("load", *sorted(str(p) for p in FIXTURES.iterdir()))
    assert loaded.returncode == 0, loaded.stderr
    state = timeline("state", "--as-of", AS_OF)
    assert state.returncode == 0, state.stderr
    assert f"{H200}  eased  25%  since 2025-12-08" in state.stdout.splitlines()
    bad = timeline("state", "no-such-rule")
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: No rule 'no-such-rule'")
    assert "Traceback" not in bad.stderr


# Files and folders that cannot be used -----------------------------------------------------


def test_export_to_a_folder_that_does_not_exist_is_one_clear_line(
    runner: CliRunner, tmp_path: Path,
):
    target = tmp_path / "missing" / "export.jsonl"
    result = run(runner, "export", "--out", str(target), code=1)
    assert result.stderr.startswith(f"Error: {target}: cannot be written")


def test_a_timeline_home_that_is_a_file_is_one_clear_line(
    runner: CliRunner, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    home = tmp_path / "home-file"
    home.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("TIMELINE_HOME", str(home))
    # Tokens live in the store's database: on PostgreSQL they need no home folder.
    commands = [["state"]] if settings.on_postgres else [["state"], ["token", "create", "x"]]
    for args in commands:
        result = run(runner, *args, code=1)
        assert result.stderr.startswith("Error: TIMELINE_HOME"), result.stderr
        assert str(home) in result.stderr


def test_import_of_a_file_that_is_not_text_names_it(runner: CliRunner, tmp_path: Path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00\n")
    result = run(runner, "import", str(path), code=1)
    assert result.stderr.startswith(f"Error: {path}: ")
    assert "UTF-8" in result.stderr


def test_import_accepts_an_export_saved_with_a_byte_order_mark(
    runner: CliRunner, tracker: Tracker, tmp_path: Path, use_empty_store: Callable[[Path], None],
):
    load_bundled(runner)
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + run(runner, "export").stdout.encode("utf-8"))
    use_empty_store(tmp_path / "other")
    assert run(runner, "import", str(path)).stdout.startswith("Imported ")


def test_whole_listings_print_as_json_when_empty_too(runner: CliRunner):
    assert json_of(run(runner, "state", "--as-of", AS_OF, "--json")) == {"items": []}
    payload = json_of(run(runner, "diff", "2025-12-01", AS_OF, "--json"))
    assert payload["changes"] == [] and (payload["from"], payload["to"]) == ("2025-12-01", AS_OF)
