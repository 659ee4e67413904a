"""``timeline serve`` as a real process on a free port, driven over HTTP like a new user would."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from timeline.domain.dates import format_instant, parse_instant

H200 = "us-h200-export-licensing-cn"
SOURCES = [{"title": "Federal Register notice", "url": "https://example.org/fr"}]
STARTUP_WAIT = 60  # seconds; a guard against a hung start, not a measurement


class Server:
    """A ``timeline serve --port 0`` process; its stderr lines are collected as they come."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "timeline", "serve", "--port", "0", *args],
            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def _wait_for_url(self) -> str:
        while True:
            try:
                line = self._queue.get(timeout=STARTUP_WAIT)
            except queue.Empty:
                self.stop()
                raise AssertionError("the server did not start:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError("the server exited:\n" + "\n".join(self.lines))
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
            if found:
                return found.group(1).rstrip("/")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=STARTUP_WAIT)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ["TIMELINE_HOME"] = str(tmp_path / "home")
    environ.pop("TIMELINE_DATABASE_URL", None)
    return environ


def timeline(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "timeline", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=STARTUP_WAIT)


@pytest.mark.slow
def test_serve_loads_the_fixtures_and_answers_reads_and_writes(env, tmp_path):
    created = timeline(env, tmp_path, "token", "create", "newsroom")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}

    server = Server(env, tmp_path)
    try:
        base = server.url
        http = requests.Session()

        # The first thing a new user opens.
        response = http.get(f"{base}/api/v1/rules?as_of=2025-12-09")
        assert response.status_code == 200
        items = {item["rule"]["id"]: item for item in response.json()["items"]}
        assert len(items) == 11
        assert (items[H200]["status"], items[H200]["rate_percent"]) == ("eased", 25.0)

        def state(known_at: str | None = None) -> dict:
            params = {"as_of": "2026-02-01", **({"known_at": known_at} if known_at else {})}
            answer = http.get(f"{base}/api/v1/rules/{H200}", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        before = state()

        # Record a fee rise with the token; without it, 401.
        fee = {"id": "us-h200-fee-30-2026-01", "kind": "fee", "effective": "2026-01",
               "rate_percent": 30, "summary": "The fee rises to 30%.", "sources": SOURCES}
        assert http.post(f"{base}/api/v1/rules/{H200}/actions", json=fee).status_code == 401
        recorded = http.post(f"{base}/api/v1/rules/{H200}/actions", json=fee, headers=auth)
        assert recorded.status_code == 201, recorded.text
        after_record = state()
        assert after_record["rate_percent"] == 30.0 and after_record["version"] == before["version"] + 1

        # Correct it: 35%, not 30%.
        corrected = http.post(f"{base}/api/v1/rules/{H200}/actions/us-h200-fee-30-2026-01/corrections",
                              json={"reason": "The notice says 35%.", "rate_percent": 35}, headers=auth)
        assert corrected.status_code == 201, corrected.text
        after_correction = state()
        assert after_correction["rate_percent"] == 35.0

        # Retract another action: the December easing.
        retracted = http.post(f"{base}/api/v1/rules/{H200}/actions/us-h200-eased-2025-12-08/retraction",
                              json={"reason": "Recorded in error."}, headers=auth)
        assert retracted.status_code == 201, retracted.text
        after_retraction = state()
        assert after_retraction["status"] == "restricted"
        assert after_retraction["conditions"] == []

        # Asked as known just before each write, the earlier answers come back unchanged.
        def just_before(write: requests.Response) -> str:
            return format_instant(parse_instant(write.json()["recorded_at"]) - timedelta(microseconds=1))

        for write, expected in [(recorded, before), (corrected, after_record),
                                (retracted, after_correction)]:
            instant = just_before(write)
            again = state(instant)
            assert again["known_at"] == instant
            assert {k: v for k, v in again.items() if k != "known_at"} == \
                {k: v for k, v in expected.items() if k != "known_at"}

        # Errors over a real socket are problem+json too, including a body over 1 MiB.
        big = http.post(f"{base}/api/v1/rules/{H200}/actions",
                        headers={**auth, "Content-Type": "application/json"},
                        data=json.dumps({**fee, "summary": "x" * (1024 * 1024)}))
        assert big.status_code == 413
        assert big.headers["Content-Type"] == "application/problem+json"
        assert http.get(f"{base}/api/v1/docs").status_code == 200
    finally:
        assert server.stop() == 0

    stderr = "\n".join(server.lines)
    assert "loaded the bundled fixtures (11 rule(s)" in stderr
    # One line per request, with method, path and query, status and size.
    request_lines = [line for line in server.lines if '"GET ' in line or '"POST ' in line]
    assert any('"GET /api/v1/rules?as_of=2025-12-09 HTTP/1.1" 200 ' in line for line in request_lines)
    assert any(f'"POST /api/v1/rules/{H200}/actions HTTP/1.1" 201 ' in line for line in request_lines)
    assert len(request_lines) == 14
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_serve_leaves_a_store_with_events_as_it_is(env, tmp_path):
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    loaded = timeline(env, tmp_path, "load", str(fixtures / "cn-rare-earth-embargo-jp.yaml"))
    assert loaded.returncode == 0, loaded.stderr
    server = Server(env, tmp_path)
    try:
        items = requests.get(f"{server.url}/api/v1/rules").json()["items"]
        assert [item["rule"]["id"] for item in items] == ["cn-rare-earth-embargo-jp"]
    finally:
        assert server.stop() == 0
    assert not any("bundled fixtures" in line for line in server.lines)


@pytest.mark.slow
def test_a_port_in_use_is_a_clear_error(env, tmp_path):
    server = Server(env, tmp_path)
    try:
        port = server.url.rsplit(":", 1)[1]
        second = timeline(env, tmp_path, "serve", "--port", port)
        assert second.returncode == 1
        assert f"Cannot listen on 127.0.0.1:{port}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        server.stop()
