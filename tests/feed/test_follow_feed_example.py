"""examples/follow_feed.py against a live server: stopped, killed, restarted, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from feed_support import LiveServer, bulk_import, make_app, record, register, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "follow_feed.py"


def handled(path: Path) -> list[dict]:
    """Events the consumer handled: one JSON line each (a line cut short by a kill is not one)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


def start(base_url: str, checkpoint: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), base_url, "--checkpoint", str(checkpoint), "--limit", "5",
         "--poll", "0.1", *extra],
        stdout=out.open("a", encoding="utf-8"), stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_consumer_killed_mid_way_and_restarted_sees_every_event(
    tracker, live_server_factory, tmp_path, how
):
    bulk_import(tracker, rules=30, actions_per_rule=9)  # 300 events
    register(tracker, "us-follow-rule")
    server = live_server_factory(make_app(tracker))
    checkpoint, out = tmp_path / "feed.position", tmp_path / "handled.jsonl"

    first = start(server.url, checkpoint, out)
    wait_until(lambda: len(handled(out)) >= 40, what="the consumer to get going")
    first.send_signal(getattr(signal, how))
    _, stderr = first.communicate(timeout=60)
    if how == "SIGTERM":
        assert first.returncode == 0, stderr
        assert "Traceback" not in stderr
    stopped_at = len(handled(out))

    record(tracker, "us-follow-rule", 25)  # recorded while the consumer is down
    total = tracker.head()
    assert stopped_at < total

    second = start(server.url, checkpoint, out, "--stop-at-head")
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr

    events = handled(out)
    positions = [int(event["sequence"]) for event in events]
    assert positions == sorted(positions)
    if how == "SIGTERM":
        # Stopped politely, it finished the event in hand and checkpointed it: exactly once.
        assert positions == list(range(1, total + 1))
    else:
        # Killed outright, at most the one event in hand when it died is handled again.
        assert sorted(set(positions)) == list(range(1, total + 1))
        assert len(positions) - len(set(positions)) <= 1
    assert int(checkpoint.read_text()) == total
    feed = make_app(tracker).test_client().get("/api/v1/events?limit=1000").get_json()["events"]
    assert {e["id"] for e in events} == {e["id"] for e in feed}


def test_the_consumer_waits_for_a_server_that_is_not_up_yet(loaded, tmp_path):
    with socket.socket() as probe:  # a free port, for a server that starts later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors, out = tmp_path / "stderr.txt", tmp_path / "handled.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), f"http://127.0.0.1:{port}", "--checkpoint",
         str(tmp_path / "feed.position"), "--poll", "0.05", "--stop-at-head"],
        stdout=out.open("w"), stderr=errors.open("w"),
    )
    server = None
    try:
        wait_until(lambda: "feed unavailable" in errors.read_text(), what="the consumer to retry")
        server = LiveServer(make_app(loaded), port=port)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        if server:
            server.stop()
    assert [int(e["sequence"]) for e in handled(out)] == list(range(1, loaded.head() + 1))
