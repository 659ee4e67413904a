"""Helpers for the feed tests: a live server, a webhook receiver on 127.0.0.1, quick writes."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from werkzeug.serving import make_server

from timeline.feed.delivery import DeliveryWorker
from timeline.service import Tracker
from timeline.web import create_app

SOURCE = [{"title": "Test source"}]


def deliver_until_idle(worker: DeliveryWorker, max_rounds: int = 10_000) -> int:
    """Hand out and send, one try after another in this thread, until nothing is due now;
    the number of tries sent."""
    sent = 0
    for _ in range(max_rounds):
        worker.hand_out()
        done = 0
        while claimed := worker.claim(worker.threads):
            messages = worker.messages(claimed)
            done += sum(worker.deliver(tried, messages.get(tried.position)) for tried in claimed)
        if not done and worker.store.behind(worker.tracker.head()) == []:
            return sent
        sent += done
    return sent


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail after a generous deadline (never a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def register(tracker: Tracker, rule_id: str, **fields: Any) -> None:
    tracker.register_rule({
        "id": rule_id, "title": fields.get("title", f"Rule {rule_id}"), "jurisdiction": "US",
        "instrument": "export_control", "targets": ["CN"], "subjects": ["chips"], "tags": [],
        "links": [],
    })


def record(tracker: Tracker, rule_id: str, count: int, kind: str = "propose") -> list[int]:
    """Record ``count`` actions on a rule; their positions."""
    positions = []
    for n in range(count):
        written = tracker.record_action(rule_id, {
            "kind": kind, "effective": "2025-01", "summary": f"step {n}", "sources": SOURCE,
        })
        positions.append(written.position)
    return positions


def bulk_import(tracker: Tracker, rules: int, actions_per_rule: int) -> int:
    """Fill an empty store quickly through ``import``; the number of events stored."""
    from datetime import datetime, timedelta, timezone

    from timeline.domain.dates import format_instant

    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    records: list[dict[str, Any]] = []
    for r in range(rules):
        rule_id = f"bulk-rule-{r:03d}"
        records.append({
            "type": "timeline.rule.registered", "rule_id": rule_id, "version": 1,
            "data": {"id": rule_id, "title": rule_id, "jurisdiction": "US", "instrument": "other",
                     "targets": [], "subjects": [], "tags": [], "links": []},
        })
        for a in range(actions_per_rule):
            records.append({
                "type": "timeline.action.recorded", "rule_id": rule_id, "version": a + 2,
                "data": {"id": f"a{a}", "kind": "propose", "effective": "2025-01",
                         "summary": "", "sources": SOURCE},
            })
    for n, item in enumerate(records):
        item["recorded_at"] = format_instant(start + timedelta(seconds=n))
    return tracker.import_records(lambda: iter(records))


def make_app(tracker: Tracker, **config: Any):
    return create_app({"TESTING": True, **config}, tracker=tracker)


def serve_in_thread(server: Any) -> threading.Thread:
    """Run a socketserver-style server in a daemon thread."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return thread


def stop_serving(server: Any, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()


class LiveServer:
    """The app served over real HTTP on 127.0.0.1, on a free port, in a thread."""

    def __init__(self, app: Any, port: int = 0):
        self._server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = serve_in_thread(self._server)

    def stop(self) -> None:
        stop_serving(self._server, self._thread)


@dataclass
class Received:
    path: str
    headers: list[tuple[str, str]]  # as sent on the wire, names unchanged
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers from a script, then with ``default``."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 204
    delay: float = 0.0
    host: str = "127.0.0.1"
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, list(self.headers.items()), body))
                    status, headers = receiver.script.pop(0) if receiver.script else (receiver.default, {})
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in self.host:
            server_class = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self._server = server_class((self.host, 0), Handler)
        self._server.daemon_threads = True
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self._server.server_port}/hook"
        self._thread = serve_in_thread(self._server)

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
