"""Many live subscribers on a real `timeline serve`: the rest of the service keeps answering,
every subscriber gets each new event, and past capacity the answer is 503 at once."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.pg import postgres_settings
from tests.test_serve import Server, timeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from subscribers import StreamHolder  # noqa: E402

H200 = "us-h200-export-licensing-cn"
SOURCES = [{"title": "Federal Register notice"}]
STREAMS = 150
DELIVERY_WAIT = 30  # seconds; a bound on a hung delivery, not a measurement

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ["TIMELINE_HOME"] = str(tmp_path / "home")
    environ["TIMELINE_MAX_SUBSCRIBERS"] = str(STREAMS)
    environ.pop("TIMELINE_DATABASE_URL", None)
    return environ


def write_token(env: dict[str, str], cwd: Path) -> dict[str, str]:
    created = timeline(env, cwd, "token", "create", "newsroom")
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from the Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def record(base: str, auth: dict[str, str], n: int) -> int:
    answer = requests.post(f"{base}/api/v1/rules/{H200}/actions", headers=auth, timeout=30, json={
        "id": f"live-{n}", "kind": "propose", "effective": "2030", "sources": SOURCES})
    assert answer.status_code == 201, answer.text
    return answer.json()["position"]


def test_a_server_holds_many_streams_and_keeps_answering(env, tmp_path):
    auth = write_token(env, tmp_path)
    server = Server(env, tmp_path)
    holder = StreamHolder(*host_port(server.url))
    try:
        base = server.url
        opened = holder.open(STREAMS)
        assert [s.status for s in opened] == [200] * STREAMS

        # While they are held, a read and a write are answered.
        read = requests.get(f"{base}/api/v1/rules/{H200}", params={"as_of": "2025-12-09"}, timeout=30)
        assert read.status_code == 200 and read.json()["status"] == "eased"
        positions = [record(base, auth, n) for n in range(3)]
        # Every subscriber receives each new event.
        assert holder.wait_for(positions, DELIVERY_WAIT)
        assert all(sorted(s.received) == positions for s in holder.streams)

        metrics = requests.get(f"{base}/metrics", timeout=30).text
        assert metric(metrics, "timeline_sse_subscribers") == STREAMS

        # Past capacity: 503 with Retry-After, as problem+json, at once (no hang).
        refused = holder.open(3)
        assert [s.status for s in refused] == [503] * 3
        for answer in refused:
            assert int(answer.headers["retry-after"]) > 0
            assert answer.headers["content-type"] == "application/problem+json"
            problem = json.loads(answer.body)
            assert problem["status"] == 503 and problem["title"] == "Service unavailable"
        # The server still answers reads at capacity.
        assert requests.get(f"{base}/healthz", timeout=30).status_code == 200

        # Clients that leave free their places.
        holder.close(holder.streams[:5])
        for _ in range(100):
            again = holder.open(1)[0]
            if again.status == 200:
                break
            requests.get(f"{base}/healthz", timeout=30)  # a bounded wait for the server to see them go
        assert again.status == 200
        position = record(base, auth, 99)
        assert holder.wait_for([position], DELIVERY_WAIT)
    finally:
        holder.stop()
        assert server.stop() == 0  # SIGTERM with streams open still stops cleanly

    stream_lines = [line for line in server.lines if '"GET /api/v1/events/stream HTTP/1.1"' in line]
    assert sum(1 for line in stream_lines if '" 200 ' in line) == STREAMS + 1
    assert sum(1 for line in stream_lines if '" 503 ' in line) >= 3
    assert "Traceback" not in "\n".join(server.lines)


def test_the_stream_resumes_and_filters_on_a_real_server(env, tmp_path):
    auth = write_token(env, tmp_path)
    server = Server(env, tmp_path)
    holder = StreamHolder(*host_port(server.url))
    try:
        base = server.url
        head = requests.get(f"{base}/api/v1/events", params={"limit": 1}, timeout=30).json()["head"]
        everything, = holder.open(1, "/api/v1/events/stream?after=0")
        us, = holder.open(1, "/api/v1/events/stream?jurisdiction=US&instrument=export_control")
        other, = holder.open(1, f"/api/v1/events/stream?rule=cn-rare-earth-embargo-jp&after={max(0, head - 50)}")
        resumed, = holder.open(1, "/api/v1/events/stream?after=0", {"Last-Event-ID": str(head - 2)})
        bad = requests.get(f"{base}/api/v1/events/stream", params={"jurisdiction": "XX"}, timeout=30)
        assert bad.status_code == 422 and "jurisdiction" in bad.json()["errors"]

        positions = [record(base, auth, n) for n in range(2)]
        for stream in (everything, us, resumed):
            deadline = time.monotonic() + DELIVERY_WAIT
            while not all(p in stream.received for p in positions) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert sorted(everything.received) == list(range(1, head + 1)) + positions
        assert sorted(resumed.received) == [head - 1, head] + positions
        assert sorted(us.received) == positions  # H200 is a US export control
        feed = requests.get(f"{base}/api/v1/events", params={"after": max(0, head - 50), "limit": 1000},
                            timeout=30).json()["events"]
        expected = [int(e["sequence"]) for e in feed if e["subject"] == "cn-rare-earth-embargo-jp"]
        assert expected and sorted(other.received) == expected
    finally:
        holder.stop()
        server.stop()


def test_several_processes_add_up_their_metrics(env, tmp_path):
    server = Server(env, tmp_path, "--workers", "2")
    holder = StreamHolder(*host_port(server.url))
    try:
        base = server.url
        session = requests.Session()
        for _ in range(30):
            assert session.get(f"{base}/api/v1/rules/{H200}", timeout=30).status_code == 200
            session.close()  # a new connection each time, so both processes answer some
        assert [s.status for s in holder.open(12)] == [200] * 12
        for _ in range(6):
            text = requests.get(f"{base}/metrics", timeout=30).text
            # Whichever process answers, the counts are the run's, not its own.
            assert metric(text, "timeline_http_requests_total", route="/api/v1/rules/<rule_id>",
                          status="200") == 30
            assert metric(text, "timeline_sse_subscribers") == 12
            assert metric(text, "timeline_http_request_duration_seconds_count",
                          route="/api/v1/rules/<rule_id>") == 30
        assert requests.get(f"{base}/readyz", timeout=30).status_code == 200
    finally:
        holder.stop()
        assert server.stop() == 0


@pytest.mark.postgres
def test_streams_on_postgresql_are_woken_by_notify(tmp_path):
    for settings in postgres_settings(tmp_path / "unused"):
        env = {**os.environ, "TIMELINE_HOME": str(tmp_path / "home"),
               "TIMELINE_DATABASE_URL": str(settings.database_url)}
        auth = write_token(env, tmp_path)
        servers = [Server(env, tmp_path), Server({**env, "TIMELINE_HOME": str(tmp_path / "other")},
                                                 tmp_path, "--workers", "2")]
        holders = [StreamHolder(*host_port(s.url)) for s in servers]
        try:
            for holder in holders:
                assert [s.status for s in holder.open(60)] == [200] * 60
            # Writes through one server reach the subscribers of every server.
            positions = [record(servers[n % 2].url, auth, n) for n in range(3)]
            for holder in holders:
                assert holder.wait_for(positions, DELIVERY_WAIT)
                assert all(sorted(s.received) == positions for s in holder.streams)
        finally:
            for holder in holders:
                holder.stop()
            for server in servers:
                assert server.stop() == 0
