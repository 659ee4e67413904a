"""A tiny run of the benchmarks, so that they keep working; no timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from generate import HistoryGenerator, generate_file  # noqa: E402


@pytest.mark.slow
def test_the_generator_is_seeded_and_keeps_its_mix(tmp_path: Path):
    first = generate_file(tmp_path / "a.jsonl", 3000, seed=3)
    generate_file(tmp_path / "b.jsonl", 3000, seed=3)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    generate_file(tmp_path / "c.jsonl", 3000, seed=4)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert (first.rules, first.actions, first.corrected, first.retracted) == (300, 3000, 60, 30)
    assert 0.03 < first.out_of_order / first.actions < 0.07
    records = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
    assert len(records) == first.events == 300 + 3000 + 60 + 30
    precisions = {len(r["data"]["effective"]) for r in records if r["type"] == "timeline.action.recorded"}
    assert precisions == {4, 7, 10}


def test_a_generated_history_imports_and_exports_unchanged(tmp_path: Path, tracker):
    records = list(HistoryGenerator(500, seed=5).records())
    assert tracker.import_records(lambda: iter(records)) == len(records)
    exported = [json.loads(line) for line in tracker.export()]
    assert exported == records


@pytest.mark.slow
def test_a_tiny_run_prints_every_row(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--actions", "300", "--lookups", "40",
         "--http-requests", "40", "--rebuild-rounds", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in ("bulk load", "rebuild", "one rule as of a day, p50", "every rule as of a day",
                "diff between two days", "a page of 1,000 feed events", "HTTP GET",
                "peak RSS of the load", "peak RSS of the rebuild", "## By size"):
        assert row in table, row
    figures = json.loads((tmp_path / "results-300.json").read_text())["sizes"][-1]
    assert figures["events"] == 300 + 30 + 6 + 3
    # Every lookup answered as the hand-written table does: the comparison is like for like.
    assert figures["lookup_mismatches"] == 0
    assert figures["hand_http_rps"] > 0 and figures["http_rps"] > 0, figures.get("http_note")
    assert (tmp_path / "results-300.md").read_text() in table
    # Three rounds of scan and rebuild, and the table shows the one of the middle ratio.
    rounds = figures["rebuild_rounds"]
    ratios = sorted(r["scan_s"] / r["rebuild_s"] for r in rounds)
    assert len(rounds) == 3 and "Rebuild vs scan, 3 rounds in turns" in table
    assert figures["scan_s"] / figures["rebuild_s"] == ratios[1]



@pytest.mark.slow
def test_a_quick_http_run_prints_every_row(tmp_path: Path):
    result = subprocess.run([sys.executable, str(BENCH / "over_http.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    assert (tmp_path / "http-results.md").read_text() in table
    rows = {line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ")}
    for row in ("`/state?as_of=2020-01-01`", "`/diff?from=2020-01-01&to=2020-12-31`", "`/` (the timeline)",
                "`/?q=drones`", "`/rules/<the rule with the most actions>`",
                "`GET /api/v1/rules?as_of=2020-01-01`, first page",
                "`GET /api/v1/diff?from=2020-01-01&to=2020-12-31`, first page",
                "`GET /api/v1/timeline?from=2020-01-01&to=2020-12-31&limit=100`",
                "… `/api/v1/rules`, fourth page", "… `/api/v1/diff`, second page",
                "… `/api/v1/timeline`, fourth page",
                "writes across many rules (4 clients), per s (p50 ms)",
                "writes to the rule of 100 actions (1 client), per s (p50 ms)",
                "write p50 ms at 100 actions vs at ~10, on one rule",
                "single-rule reads (4 clients), per s (p50 ms)",
                "reads of the rule of 100 actions (4 clients), per s (p50 ms)"):
        assert row in rows, row
    assert any(row.startswith("50-rule world answer") for row in rows)
    figures = json.loads((tmp_path / "http-results.json").read_text())
    # Both sizes served: every page answered at both (the lists' later pages may not exist yet).
    for size in ("small", "large"):
        pages = [row for row in figures[size]["rows"] if row["kind"] == "page"]
        assert len(pages) == 5 and all("error" not in row and row["bytes"] > 0 for row in pages), pages
    assert figures["large"]["busiest_rule_actions"] > figures["small"]["busiest_rule_actions"]
    # The peer answered what timeline answered, for the long rule and a sample of the others.
    writes = figures["writes"]
    assert writes["mismatches"] == []
    assert "Both answered the same states" in table
    for side in ("timeline", "peer"):
        assert writes[side]["writes"]["n"] == 100 and writes[side]["long_rule_writes"]["n"] == 20
        assert writes[side]["world"]["items"] == 50


_NAMED_CHILD = """
import os, time
if os.fork() == 0:
    with open("/proc/self/comm", "w") as comm:  # the name ps and top show
        comm.write("timeline-test")
    start = time.process_time()
    while time.process_time() - start < 0.4:
        pass
    time.sleep(0.5)  # seen once more after its work
    os._exit(0)
os.wait()
"""


@pytest.mark.slow
def test_cpu_by_process_names_each_process_of_the_tree_and_its_cpu():
    result = subprocess.run(
        [sys.executable, str(BENCH / "cpu_by_process.py"), sys.executable, "-c", _NAMED_CHILD],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    table = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in result.stdout.splitlines() if line.startswith("| ")]
    header, command, child, total = table  # in the order they started, then the sum
    assert header == ["process", "name", "started at s", "CPU s"]
    assert child[1] == "timeline-test"  # the forked child, by the name it gave itself
    assert float(child[3]) >= 0.2
    assert total[0] == "all"
    # each figure rounded to a tenth on its own
    assert float(total[3]) == pytest.approx(float(command[3]) + float(child[3]), abs=0.11)


@pytest.mark.slow
def test_a_tiny_webhook_fan_out_delivers_everything_to_the_live_endpoints(tmp_path: Path):
    out = tmp_path / "webhooks.json"
    done = subprocess.run([sys.executable, str(BENCH / "webhooks.py"), "--events", "4", "--rate", "20",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("p50_ms", "p99_ms", "max_ms", "live received", "refuses every first try"):
        assert row in done.stdout
    figures = json.loads(out.read_text())
    for phase in ("baseline", "failing"):
        assert figures[phase]["live_received"] == figures[phase]["live_expected"] == 45 * 4
    assert figures["failing"]["refuse_first_received"] == 4
    # Positions 2 to 5 are the events written; 3 is refused for ever, 4 and 5 still arrive.
    assert figures["failing"]["refuse_one_after_refused"] == figures["failing"]["refuse_one_expected_after"] == 2
    assert figures["failing"]["refuse_one_received"] == 3
