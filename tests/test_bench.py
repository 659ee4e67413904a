"""A tiny run of the benchmarks, so that they keep working; no timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from generate import HistoryGenerator, generate_file  # noqa: E402


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
