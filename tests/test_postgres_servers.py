"""Several `timeline serve` processes on one PostgreSQL: what one acknowledges, all answer."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.pg import postgres_settings
from tests.test_serve import Server
from timeline.config import Settings
from timeline.tokens import TokenStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SOURCES = [{"title": "Test notice"}]


@pytest.fixture
def pg(tmp_path: Path):
    yield from postgres_settings(tmp_path / "unused")


def start_servers(settings: Settings, tmp_path: Path, count: int) -> list[Server]:
    """``count`` processes, each with its own home (its own read model), as on separate hosts."""
    servers = []
    for n in range(count):
        env = {**os.environ, "TIMELINE_HOME": str(tmp_path / f"host-{n}"),
               "TIMELINE_DATABASE_URL": str(settings.database_url)}
        servers.append(Server(env, tmp_path))
    return servers


def register(url: str, auth: dict, rule_id: str) -> None:
    response = requests.post(f"{url}/api/v1/rules", headers=auth, timeout=30, json={
        "id": rule_id, "title": f"Rule {rule_id}", "jurisdiction": "US",
        "instrument": "import_tariff", "targets": ["CN"]})
    assert response.status_code in (200, 201), response.text


def history_ids(url: str, rule_id: str) -> list[str]:
    response = requests.get(f"{url}/api/v1/rules/{rule_id}/history", timeout=30)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def feed_ids(url: str) -> list[str]:
    ids, after = [], 0
    while True:
        page = requests.get(f"{url}/api/v1/events", params={"after": after, "limit": 1000},
                            timeout=30).json()
        ids += [event["data"]["id"] for event in page["events"]
                if event["type"] == "timeline.action.recorded"]
        if not page["events"]:
            return ids
        after = page["next_after"]


def test_three_servers_sixteen_writers_every_acknowledged_action_everywhere_once(
    pg: Settings, tmp_path: Path,
) -> None:
    token = TokenStore(pg).create("writers")
    auth = {"Authorization": f"Bearer {token}"}
    servers = start_servers(pg, tmp_path, 3)
    urls = [s.url for s in servers]
    try:
        rules = [f"mp-rule-{n}" for n in range(4)]
        for rule_id in rules:
            register(urls[0], auth, rule_id)

        def writer(w: int) -> list[tuple[str, str]]:
            done = []
            for i in range(6):
                rule_id = rules[(w + i) % len(rules)]
                url = urls[(w + i) % 3]
                response = requests.post(f"{url}/api/v1/rules/{rule_id}/actions", headers=auth,
                                         timeout=60, json={"id": f"w{w}-a{i}", "kind": "fee",
                                                           "effective": f"2025-{i + 1:02d}",
                                                           "rate_percent": float(w), "sources": SOURCES})
                assert response.status_code == 201, response.text
                # A read that another process starts after the acknowledgement sees the write.
                other = urls[(w + i + 1) % 3]
                assert f"w{w}-a{i}" in history_ids(other, rule_id)
                done.append((rule_id, f"w{w}-a{i}"))
            return done

        with ThreadPoolExecutor(16) as pool:
            acknowledged = [pair for result in pool.map(writer, range(16)) for pair in result]
        assert len(acknowledged) == 96

        for url in urls:
            for rule_id in rules:
                expected = sorted(a for r, a in acknowledged if r == rule_id)
                assert sorted(history_ids(url, rule_id)) == expected
            recorded = [i for i in feed_ids(url) if i.startswith("w")]
            assert sorted(recorded) == sorted(a for _, a in acknowledged)  # each exactly once
        # Every process gives the same answer to the same question.
        first = requests.get(f"{urls[0]}/api/v1/rules", params={"as_of": "2025-06-15"}, timeout=30).json()
        question = {"as_of": "2025-06-15", "known_at": first["known_at"]}
        for url in urls[1:]:
            assert requests.get(f"{url}/api/v1/rules", params=question, timeout=30).json() == first
    finally:
        for server in servers:
            server.stop()


def test_a_server_killed_during_writes_loses_nothing_it_acknowledged(pg: Settings, tmp_path: Path) -> None:
    token = TokenStore(pg).create("writers")
    auth = {"Authorization": f"Bearer {token}"}
    victim, survivor = start_servers(pg, tmp_path, 2)
    try:
        register(survivor.url, auth, "kill-rule")
        acknowledged: list[str] = []
        stop = threading.Event()

        def writer(w: int) -> None:
            for i in range(200):
                if stop.is_set():
                    return
                try:
                    response = requests.post(
                        f"{victim.url}/api/v1/rules/kill-rule/actions", headers=auth, timeout=30,
                        json={"id": f"k{w}-{i}", "kind": "propose", "effective": "2025",
                              "sources": SOURCES})
                except requests.RequestException:
                    return  # the server died under this request: not acknowledged
                if response.status_code == 201:
                    acknowledged.append(f"k{w}-{i}")

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 20 and any(t.is_alive() for t in threads):
            threading.Event().wait(0.05)
        victim.process.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join(60)
        stop.set()
        assert len(acknowledged) >= 20
        stored = history_ids(survivor.url, "kill-rule")
        assert set(acknowledged) <= set(stored)
        assert len(stored) == len(set(stored))
    finally:
        victim.stop()
        survivor.stop()


def test_serve_with_workers_runs_several_processes_on_one_store(pg: Settings, tmp_path: Path) -> None:
    token = TokenStore(pg).create("writers")
    auth = {"Authorization": f"Bearer {token}"}
    env = {**os.environ, "TIMELINE_HOME": str(tmp_path / "home"),
           "TIMELINE_DATABASE_URL": str(pg.database_url)}
    server = Server(env, tmp_path, "--workers", "3")
    try:
        register(server.url, auth, "workers-rule")
        for i in range(12):
            response = requests.post(f"{server.url}/api/v1/rules/workers-rule/actions", headers=auth,
                                     timeout=30, json={"id": f"a{i}", "kind": "fee", "effective": "2025",
                                                       "rate_percent": float(i), "sources": SOURCES})
            assert response.status_code == 201, response.text
            # Whichever process answers next, it has the write.
            assert f"a{i}" in history_ids(server.url, "workers-rule")
        state = requests.get(f"{server.url}/api/v1/rules/workers-rule", params={"as_of": "2025-06-01"},
                             timeout=30).json()
        assert state["rate_percent"] == 11.0 and state["version"] == 13
        assert any("(3 workers)" in line for line in server.lines)
    finally:
        assert server.stop() == 0
