"""timeline publish: a SQLite database that a real Datasette opens and answers queries on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner
from datasette.app import Datasette

from timeline.cli import main
from timeline.domain.dates import PolicyDate, parse_instant
from timeline.publish import metadata_path, publish
from timeline.service import Tracker

RULE = "us-h200-export-licensing-cn"
SOURCE = [{"title": "Commerce Department notice"}]


def datasette_get(path: Path, url: str, params: dict | None = None) -> tuple[int, object]:
    """Ask a Datasette serving the published file (with its metadata) for ``url``."""
    metadata = json.loads(metadata_path(path).read_text(encoding="utf-8"))
    datasette = Datasette([str(path)], metadata=metadata)

    async def get() -> tuple[int, object]:
        response = await datasette.client.get(url, params=params)
        return response.status_code, response.json()

    return asyncio.run(get())


@pytest.fixture
def corrected(loaded: Tracker) -> Tracker:
    """The bundled fixtures, with one action corrected and another retracted."""
    loaded.correct_action(RULE, "us-h200-fee-25-2025-12-08", {"rate_percent": 15.0},
                          "The fee is 15%, not 25%.")
    loaded.retract_action("cn-nvidia-h20-purchase-ban", loaded.history(
        "cn-nvidia-h20-purchase-ban")[1][0]["id"], "Recorded in error.")
    return loaded


def test_datasette_answers_queries_on_the_published_database(corrected: Tracker, tmp_path: Path):
    out = tmp_path / "policy.db"
    known_at = publish(corrected, out)
    _, history = corrected.history(RULE, parse_instant(known_at))

    status, rows = datasette_get(out, f"/policy/actions.json?rule_id={RULE}&_shape=array"
                                      "&_sort=effective_start")
    assert status == 200
    assert sorted(row["id"] for row in rows) == sorted(item["id"] for item in history)
    fee = next(row for row in rows if row["kind"] == "fee")
    assert fee["rate_percent"] == 15.0 and fee["corrected"] == 1
    assert json.loads(fee["original"])["rate_percent"] == 25.0

    # Full-text search on actions and on rules, as Datasette offers it.
    status, found = datasette_get(out, "/policy/actions.json?_search=Treasury&_shape=array")
    assert status == 200
    assert {row["id"] for row in found} == {"us-h200-fee-25-2025-12-08"}
    status, found = datasette_get(out, "/policy/rules.json?_search=H200&_shape=array")
    assert RULE in {row["id"] for row in found}

    # Any SQL: the corrections joined to their actions, and the retracted action marked.
    status, joined = datasette_get(out, "/policy.json", {"_shape": "array", "sql": (
        "select a.id, c.reason, json_extract(c.changes, '$.rate_percent') as rate "
        "from actions a join corrections c on c.rule_id = a.rule_id and c.action_id = a.id")})
    assert status == 200
    assert joined == [{"id": "us-h200-fee-25-2025-12-08", "reason": "The fee is 15%, not 25%.",
                       "rate": 15.0}]
    status, retracted = datasette_get(out, "/policy.json", {"_shape": "array", "sql": (
        "select rule_id, retraction_reason from actions where retracted = 1")})
    assert retracted == [{"rule_id": "cn-nvidia-h20-purchase-ban",
                          "retraction_reason": "Recorded in error."}]


def test_the_metadata_describes_every_table_and_column(corrected: Tracker, tmp_path: Path):
    out = tmp_path / "policy.db"
    known_at = publish(corrected, out)
    metadata = json.loads(metadata_path(out).read_text(encoding="utf-8"))
    assert metadata_path(out).name == "policy.metadata.json"
    assert known_at in metadata["source"] and known_at in metadata["description"]
    assert metadata["license"] and metadata["license_url"]
    described = metadata["databases"]["policy"]["tables"]

    db = sqlite_utils.Database(out)
    fts = {name for name in db.table_names() if db[name].virtual_table_using}
    shadows = {name for name in db.table_names() for index in fts if name.startswith(index + "_")}
    tables = set(db.table_names()) - shadows - {"sqlite_stat1"}
    assert tables == set(described)
    for name in tables:
        assert described[name]["description"].strip(), name
        columns = described[name]["columns"]
        assert set(columns) == set(db[name].columns_dict), name
        assert all(text.strip() for text in columns.values()), name


def test_the_tables_have_plain_types_keys_and_joins(loaded: Tracker, tmp_path: Path):
    out = tmp_path / "policy.db"
    publish(loaded, out)
    db = sqlite_utils.Database(out)
    assert db["actions"].pks == ["rule_id", "id"]
    assert {(fk.column, fk.other_table) for fk in db["sources"].foreign_keys} == {("rule_id", "rules")}
    assert {(fk.column, fk.other_table) for fk in db["links"].foreign_keys} == {
        ("rule_id", "rules"), ("linked_rule_id", "rules")}
    assert db["actions"].columns_dict["rate_percent"] is float
    assert db["actions"].columns_dict["position"] is int
    rule = db["rules"].get(RULE)
    assert json.loads(rule["targets"]) == ["CN"]
    assert [row["linked_rule_id"] for row in db["links"].rows_where("rule_id = ?", [RULE])] == [
        "us-advanced-ai-chip-export-controls-cn"]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    # Every source of every action, in order.
    history = {item["id"]: item for item in loaded.history(RULE)[1]}
    for action_id, item in history.items():
        rows = list(db["sources"].rows_where("rule_id = ? AND action_id = ?", [RULE, action_id],
                                             order_by="number"))
        assert [row["quote"] for row in rows] == [s.get("quote") for s in item["sources"]]


def test_spells_agree_with_the_state_on_their_days(loaded: Tracker, tmp_path: Path):
    out = tmp_path / "policy.db"
    known_at = publish(loaded, out)
    instant = parse_instant(known_at)
    db = sqlite_utils.Database(out)
    spells = list(db["spells"].rows_where(order_by="rule_id, valid_from"))
    assert {s["rule_id"] for s in spells} == {r["id"] for r in db["rules"].rows}
    for spell in spells:
        assert spell["known_at"] == known_at
        day = date.fromisoformat(spell["valid_from"])
        state = loaded.state(spell["rule_id"], day, instant)
        assert (spell["status"], spell["rate_percent"], json.loads(spell["conditions"]),
                json.loads(spell["based_on"])) == (
            state["status"], state["rate_percent"], state["conditions"], state["based_on"])
    first: dict[str, str] = {}
    for spell in spells:
        first.setdefault(spell["rule_id"], spell["valid_from"])
    for rule_id, day in first.items():  # a rule's first spell starts on its first action's day
        starts = [PolicyDate.parse(item["effective"]).start
                  for item in loaded.history(rule_id, instant)[1] if not item["retracted"]]
        assert day == min(starts).isoformat(), rule_id


def test_a_vintage_publishes_the_same_rows_whatever_is_recorded_later(loaded: Tracker,
                                                                      tmp_path: Path):
    first = tmp_path / "first.db"
    known_at = publish(loaded, first)
    loaded.record_action(RULE, {"id": "later-lift", "kind": "lift", "effective": "2026-02-01",
                                "sources": SOURCE})
    loaded.correct_action(RULE, "us-h200-fee-25-2025-12-08", {"summary": "Changed later."}, "Later.")
    again = tmp_path / "again.db"
    assert publish(loaded, again, parse_instant(known_at)) == known_at
    now = tmp_path / "now.db"
    publish(loaded, now)

    def dump(path: Path) -> dict[str, list]:
        conn = sqlite3.connect(path)
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%fts%' "
            "AND name != 'sqlite_stat1' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM [{t}] ORDER BY 1, 2").fetchall() for t in tables}

    assert dump(first) == dump(again)
    assert dump(now) != dump(first)
    later = sqlite_utils.Database(now)
    assert later["actions"].get((RULE, "later-lift"))["kind"] == "lift"
    assert not list(sqlite_utils.Database(again)["actions"].rows_where("id = 'later-lift'"))


def test_the_command_writes_both_files_and_refuses_to_overwrite(runner: CliRunner, loaded: Tracker,
                                                                tmp_path: Path):
    out = tmp_path / "policy.db"
    result = runner.invoke(main, ["publish", str(out)])
    assert result.exit_code == 0, result.output
    assert "policy.metadata.json" in result.output and "as known at" in result.output
    assert out.is_file() and metadata_path(out).is_file()
    before = out.read_bytes()

    result = runner.invoke(main, ["publish", str(out)])
    assert result.exit_code == 1
    assert f"{out} exists; give --replace" in result.output
    assert "Traceback" not in result.output
    assert out.read_bytes() == before

    result = runner.invoke(main, ["publish", str(out), "--replace",
                                  "--known-at", "2000-01-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    assert sqlite_utils.Database(out)["rules"].count == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    result = runner.invoke(main, ["publish", str(tmp_path / "policy2.db"), "--known-at", "yesterday"])
    assert result.exit_code == 2 and "RFC 3339" in result.output

    for target, problem in ((tmp_path, f"{tmp_path} is a folder, not a file."),
                            (tmp_path / "none" / "x.db", f"{tmp_path / 'none'}: no such folder.")):
        result = runner.invoke(main, ["publish", str(target), "--replace"])
        assert result.exit_code == 1 and problem in result.output, result.output
        assert "Traceback" not in result.output

