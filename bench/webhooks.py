"""Webhook fan-out on loopback: delay from write to receipt, with and without failing endpoints.

    python bench/webhooks.py --events 100 --rate 20

Two phases, each on a fresh SQLite store with `timeline serve`'s delivery worker (its default
senders, cap and timeout) and one receiver server on 127.0.0.1 (every endpoint a path of it):

- baseline: 45 endpoints that answer 204 at once;
- failing: the same 45, plus 3 endpoints that take the connection and never answer (each try
  runs into the 15 s timeout), 2 on a closed port, one that refuses the first try of every event,
  and one that always refuses the event at position 3.

Events are written at --rate per second; for the 45 live endpoints it reports how many events
arrived and the delay from the write returning to the receipt, p50, p99 and max, and the
failing phase's figures as ratios to the baseline's. For the refusing endpoints it reports how
many events arrived (every one, for the first; every one but the refused event, for the other).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from timeline.config import Settings
from timeline.feed.delivery import start_delivery_worker
from timeline.feed.webhooks import WebhookStore
from timeline.service import Tracker

LIVE = 45
SOURCE = [{"title": "Benchmark source"}]


def receive(port: "multiprocessing.connection.Connection", log_path: str, refused_event: int) -> None:
    """The receiver, in a process of its own (as receivers are elsewhere): one server, many
    endpoints, each a path. Notes when each path got each event, and answers 204, or refuses by
    the path's rule (``/first/``: an event's first try; ``/one/``: one event)."""
    lock = threading.Lock()
    tries: dict[tuple[str, int], int] = {}
    log = open(log_path, "a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            at = time.time()
            position = int(json.loads(body)["sequence"])
            key = (self.path, position)
            with lock:
                tries[key] = tries.get(key, 0) + 1
                refuse = ((self.path.startswith("/first/") and tries[key] == 1)
                          or (self.path.startswith("/one/") and position == refused_event))
                if not refuse:
                    log.write(f"{self.path} {position} {at}\n")
            self.send_response(500 if refuse else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024,
                                                           "daemon_threads": True})
    server = server_class(("127.0.0.1", 0), Handler)
    port.send(server.server_port)
    server.serve_forever()


class Receiver:
    def __init__(self, refused_event: int, folder: str) -> None:
        self.log_path = os.path.join(folder, "received.log")
        open(self.log_path, "w").close()
        ours, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=receive, args=(theirs, self.log_path, refused_event), daemon=True)
        self.process.start()
        self.base = f"http://127.0.0.1:{ours.recv()}"
        self.received: dict[tuple[str, int], float] = {}

    def read(self) -> None:
        with open(self.log_path) as lines:
            for line in lines:
                path, position, at = line.split()
                self.received.setdefault((path, int(position)), float(at))

    def count(self, path: str) -> int:
        return sum(1 for (p, _) in self.received if p == path)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        self.read()


class Silent:
    """Takes connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/silent"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/dead"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def phase(failing: bool, events: int, rate: float, wait: float) -> dict[str, Any]:
    refused_event = 3  # /one/ refuses the event at this position for ever
    with tempfile.TemporaryDirectory(prefix="timeline-bench-webhooks-") as home:
        settings = Settings(home=Path(home), webhook_allow_private=True)
        tracker = Tracker(settings)
        receiver = Receiver(refused_event, home)
        silent = [Silent() for _ in range(3)] if failing else []
        store = WebhookStore(settings)
        tracker.register_rule({"id": "bench-webhook-rule", "title": "Bench", "jurisdiction": "US",
                               "instrument": "other", "targets": [], "subjects": [], "tags": [],
                               "links": []})
        head = tracker.app.head()
        live = [f"/live/{n}" for n in range(LIVE)]
        for path in live:
            store.register(receiver.base + path, None, head)
        if failing:
            for target in silent:
                store.register(target.url, None, head)
            for _ in range(2):
                store.register(closed_port(), None, head)
            store.register(receiver.base + "/first/0", None, head)
            store.register(receiver.base + "/one/0", None, head)
        stop = threading.Event()
        worker = start_delivery_worker(tracker, stop)
        written: dict[int, float] = {}
        started = time.time()
        try:
            for n in range(events):
                due = started + n / rate
                time.sleep(max(0.0, due - time.time()))
                done = tracker.record_action("bench-webhook-rule", {
                    "kind": "propose", "effective": "2025-01", "summary": f"event {n}",
                    "sources": SOURCE,
                })
                written[done.position] = time.time()
            positions = sorted(written)
            deadline = time.time() + wait
            wanted_first = "/first/0"
            while time.time() < deadline:
                receiver.read()
                got = all(receiver.count(path) == events for path in live)
                if got and (not failing or receiver.count(wanted_first) == events):
                    break
                time.sleep(0.1)
        finally:
            stop.set()
            for target in silent:
                target.stop()
            worker.join(60)
            receiver.stop()
            tracker.close()
        delays = [receiver.received[(path, p)] - written[p]
                  for path in live for p in positions if (path, p) in receiver.received]
        result: dict[str, Any] = {
            "endpoints": len(live) + (7 if failing else 0),
            "events": events,
            "live_received": len(delays),
            "live_expected": len(live) * events,
            "p50_ms": percentile(delays, 0.5) * 1000,
            "p99_ms": percentile(delays, 0.99) * 1000,
            "max_ms": max(delays) * 1000,
            "mean_ms": statistics.fmean(delays) * 1000,
            # Deliveries to the live endpoints per second, from the first write to the last receipt.
            "live_per_second": len(delays) / (max(
                receiver.received[(path, p)] for path in live for p in positions
                if (path, p) in receiver.received) - started),
        }
        if failing:
            result["refuse_first_received"] = receiver.count("/first/0")
            refused_position = refused_event
            result["refuse_one_received"] = receiver.count("/one/0")
            result["refuse_one_after_refused"] = sum(
                1 for p in positions if p > refused_position and ("/one/0", p) in receiver.received)
            result["refuse_one_expected_after"] = sum(1 for p in positions if p > refused_position)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="events written per second")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait after the last write for every receipt")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    baseline = phase(False, args.events, args.rate, args.wait)
    failing = phase(True, args.events, args.rate, args.wait)
    rows = [("", "baseline (45 live)", "failing (45 live + 7)", "ratio")]
    for key in ("p50_ms", "p99_ms", "max_ms"):
        rows.append((key, f"{baseline[key]:.1f}", f"{failing[key]:.1f}", f"{failing[key] / baseline[key]:.2f}x"))
    rows.append(("live received", f"{baseline['live_received']}/{baseline['live_expected']}",
                 f"{failing['live_received']}/{failing['live_expected']}", ""))
    rows.append(("live per s", f"{baseline['live_per_second']:.0f}", f"{failing['live_per_second']:.0f}",
                 f"{failing['live_per_second'] / baseline['live_per_second']:.2f}x"))
    for row in rows:
        print(f"{row[0]:<14} {row[1]:>20} {row[2]:>24} {row[3]:>8}")
    print(f"refuses every first try: received {failing['refuse_first_received']}/{args.events}")
    print(f"refuses position 3 for ever: received {failing['refuse_one_after_refused']}/"
          f"{failing['refuse_one_expected_after']} of the events after it")
    if args.out:
        args.out.write_text(json.dumps({"baseline": baseline, "failing": failing}, indent=2))
    ok = (baseline["live_received"] == baseline["live_expected"]
          and failing["live_received"] == failing["live_expected"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
