"""Live subscribers against `timeline serve`: many event streams held, reads and writes meanwhile.

    python bench/subscribers.py --home HOME

It copies the store (--home, a TIMELINE_HOME) to a temporary folder, serves it with
`timeline serve --port 0` and TIMELINE_MAX_SUBSCRIBERS=--capacity, and for each count of
streams (--streams, default 0,100,500) holds that many `GET /api/v1/events/stream` open from one
client process (asyncio, raw sockets) while the main process measures:

- read latency, `GET /api/v1/rules/<id>?as_of=` (p50, p99), sequential requests;
- write latency, `POST /api/v1/rules/<id>/actions` (p50, p99), sequential requests
  --write-gap seconds apart;
- delivery latency: from the start of each write to each stream's receipt of its event (p50,
  p99, and whether every stream got every event);

The counts take turns for --rounds rounds and each figure is the median of its rounds. Then,
with the streams at capacity, it opens --extra more and reports how they are answered (503
with Retry-After, and how long that took). Figures are printed as a table with ratios to the
run without streams, and written as JSON to --out. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

STREAM = "/api/v1/events/stream"
OPEN_TIMEOUT = 30.0


# The client: many streams from one event loop ---------------------------------------------------


class SseStream:
    """One open event stream: the status, and when each event id arrived (time.monotonic)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.received: dict[int, float] = {}
        self.opened_in = 0.0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None

    async def open(self, host: str, port: int, path: str = STREAM,
                   headers: dict[str, str] | None = None) -> "SseStream":
        began = time.monotonic()
        reader, self._writer = await asyncio.open_connection(host, port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        status_line = await reader.readline()
        self.status = int(status_line.split()[1])
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            self.body = await reader.readexactly(length) if length else b""
            self.opened_in = time.monotonic() - began
            self.close()
            return self
        first = await self._chunk(reader)  # the stream's opening comment
        self.body = first
        self.opened_in = time.monotonic() - began
        self._task = asyncio.ensure_future(self._follow(reader))
        return self

    @staticmethod
    async def _chunk(reader: asyncio.StreamReader) -> bytes:
        size = int((await reader.readline()).strip() or b"0", 16)
        data = await reader.readexactly(size + 2)
        return data[:-2]

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        try:
            while True:
                chunk = await self._chunk(reader)
                if not chunk:
                    return
                pending += chunk
                *blocks, pending = pending.split(b"\n\n")
                now = time.monotonic()
                for block in blocks:
                    for line in block.split(b"\n"):
                        if line.startswith(b"id: "):
                            self.received.setdefault(int(line[4:]), now)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (the server's own dependency): a lighter client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class StreamHolder:
    """Streams held open by an event loop in a thread of its own (for tests and the bench)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.streams: list[SseStream] = []
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coroutine: Any, timeout: float = OPEN_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def open(self, count: int, path: str = STREAM, headers: dict[str, str] | None = None,
             at_once: int = 50) -> list[SseStream]:
        """Open ``count`` more streams (``at_once`` connecting at a time); their statuses tell."""

        async def opening() -> list[SseStream]:
            gate = asyncio.Semaphore(at_once)

            async def one() -> SseStream:
                async with gate:
                    return await SseStream().open(self.host, self.port, path, headers)

            return list(await asyncio.gather(*(one() for _ in range(count))))

        opened = self._run(opening(), OPEN_TIMEOUT + count * 0.1)
        self.streams += [s for s in opened if s.status == 200]
        return opened

    def wait_for(self, positions: list[int], timeout: float) -> bool:
        """Whether every held stream has received every one of ``positions`` within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(all(p in s.received for p in positions) for s in self.streams):
                return True
            time.sleep(0.02)
        return False

    def close(self, streams: list[SseStream] | None = None) -> None:
        async def closing(targets: list[SseStream]) -> None:
            for stream in targets:
                stream.close()
            await asyncio.sleep(0)

        targets = list(self.streams if streams is None else streams)
        self._run(closing(targets))
        self.streams = [s for s in self.streams if s not in targets]

    def stop(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _hold(pipe: Any, host: str, port: int) -> None:
    """A client process: holds streams on command, and reports receipt times."""
    holder = StreamHolder(host, port)
    while True:
        command, *args = pipe.recv()
        if command == "open":
            opened = holder.open(args[0])
            pipe.send([(s.status, s.headers.get("retry-after"), s.opened_in) for s in opened])
        elif command == "wait":
            complete = holder.wait_for(args[0], args[1])
            pipe.send((complete, [{p: s.received.get(p) for p in args[0]} for s in holder.streams]))
        elif command == "close":
            holder.close()
            pipe.send(True)
        else:
            holder.stop()
            pipe.send(True)
            return


class RemoteHolder:
    """A :class:`StreamHolder` in a child process, so that the client's work for the streams
    does not slow the main process's own measurements."""

    def __init__(self, host: str, port: int):
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_hold, args=(child, host, port), daemon=True)
        self._process.start()

    def ask(self, *command: Any) -> Any:
        self._pipe.send(command)
        if not self._pipe.poll(120):
            raise TimeoutError(f"the stream holder did not answer {command[0]!r}")
        return self._pipe.recv()

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()


# The server and the measurements --------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Server:
    def __init__(self, home: Path, capacity: int):
        env = {**os.environ, "TIMELINE_HOME": str(home), "TIMELINE_MAX_SUBSCRIBERS": str(capacity)}
        env.pop("TIMELINE_DATABASE_URL", None)
        self.env = env
        self.process = subprocess.Popen([sys.executable, "-m", "timeline", "serve", "--port", "0"],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        deadline = time.monotonic() + 120
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            found = re.search(r"serving on http://([\d.]+):(\d+)/", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                break
            if not line and self.process.poll() is not None:
                raise RuntimeError("the server exited")
        else:
            raise RuntimeError("the server did not start")
        # Drain the request log so that the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def timed(connection: HTTPConnection, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[float, int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    began = time.monotonic()
    connection.request(method, path, body=data, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    return time.monotonic() - began, response.status, payload


def measure(server: Server, token: str, rule_ids: list[str], reads: int, writes: int,
            holder: RemoteHolder | None, streams: int, step: int,
            write_gap: float = 0.25) -> dict[str, Any]:
    connection = HTTPConnection(server.host, server.port, timeout=30)
    read_times = []
    for n in range(reads):
        seconds, status, _ = timed(connection, "GET",
                                   f"/api/v1/rules/{rule_ids[n % len(rule_ids)]}?as_of=2025-06-01")
        assert status == 200, status
        read_times.append(seconds)
    write_times, started, positions = [], [], []
    for n in range(writes):
        rule_id = rule_ids[n % len(rule_ids)]
        began = time.monotonic()
        seconds, status, payload = timed(
            connection, "POST", f"/api/v1/rules/{rule_id}/actions",
            {"id": f"bench-live-{step}-{n}", "kind": "propose", "effective": "2030",
             "summary": "A benchmark write.", "sources": [{"title": "Benchmark"}]},
            {"Authorization": f"Bearer {token}"})
        assert status == 201, payload
        write_times.append(seconds)
        started.append(began)
        positions.append(json.loads(payload)["position"])
        time.sleep(write_gap)  # writes arrive one by one, as they would from editors
    connection.close()
    result: dict[str, Any] = {
        "streams": streams,
        "read_p50_ms": percentile(read_times, 0.5) * 1000, "read_p99_ms": percentile(read_times, 0.99) * 1000,
        "write_p50_ms": percentile(write_times, 0.5) * 1000, "write_p99_ms": percentile(write_times, 0.99) * 1000,
    }
    if holder is not None and streams:
        complete, receipts = holder.ask("wait", positions, 30.0)
        delays = [received[p] - began for received in receipts
                  for p, began in zip(positions, started) if received[p] is not None]
        result.update({
            "every_stream_got_every_event": complete,
            "deliveries": len(delays), "expected_deliveries": len(positions) * streams,
            "delivery_p50_ms": percentile(delays, 0.5) * 1000,
            "delivery_p99_ms": percentile(delays, 0.99) * 1000,
        })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True,
                        help="a TIMELINE_HOME to copy and serve, e.g. an empty one into which "
                             "`timeline import` put `bench/generate.py --actions 10000`'s file")
    parser.add_argument("--streams", default="0,100,500", help="counts of streams to hold")
    parser.add_argument("--capacity", type=int, default=500, help="TIMELINE_MAX_SUBSCRIBERS")
    parser.add_argument("--extra", type=int, default=100, help="streams tried past capacity")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every count")
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--write-gap", type=float, default=0.25,
                        help="seconds between one write's answer and the next write")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "out" / "subscribers.json")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]

    with tempfile.TemporaryDirectory(prefix="timeline-subscribers-") as folder:
        home = Path(folder) / "home"
        shutil.copytree(args.home, home)
        env = {**os.environ, "TIMELINE_HOME": str(home)}
        env.pop("TIMELINE_DATABASE_URL", None)
        made = subprocess.run([sys.executable, "-m", "timeline", "token", "create", "bench"],
                              env=env, capture_output=True, text=True, check=True)
        token = made.stdout.strip().splitlines()[-1]
        server = Server(home, args.capacity)
        holder = RemoteHolder(server.host, server.port)
        rounds: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        try:
            connection = HTTPConnection(server.host, server.port, timeout=60)
            _, _, body = timed(connection, "GET", "/api/v1/rules?as_of=2025-06-01")
            rule_ids = [item["rule"]["id"] for item in json.loads(body)["items"]][:50]
            connection.close()
            held = 0
            measure(server, token, rule_ids, 50, 5, None, 0, 999)  # warm up
            # The counts take turns, round after round, so that a machine busy with other work
            # for a while weighs on every count alike; each figure is the median of the rounds.
            for round_ in range(args.rounds):
                for step, count in enumerate(counts):
                    if count != held:
                        holder.ask("close")
                        opened = holder.ask("open", count) if count else []
                        assert all(status == 200 for status, _, _ in opened), opened
                        held = count
                    rounds.append(measure(server, token, rule_ids, args.reads, args.writes,
                                          holder, held, round_ * len(counts) + step,
                                          args.write_gap))
                    print(json.dumps(rounds[-1]), flush=True)
            for count in counts:
                mine = [r for r in rounds if r["streams"] == count]
                results.append({key: (statistics.median(r[key] for r in mine)
                                      if isinstance(mine[0][key], float) else mine[0][key])
                                 for key in mine[0]})
                results[-1]["every_stream_got_every_event"] = all(
                    r.get("every_stream_got_every_event", True) for r in mine)
            capacity: dict[str, Any] = {}
            if args.extra:
                if held < args.capacity:
                    holder.ask("open", args.capacity - held)
                    held = args.capacity
                began = time.monotonic()
                extra = holder.ask("open", args.extra)
                capacity = {
                    "held": held, "tried": args.extra,
                    "answered_503": sum(1 for status, _, _ in extra if status == 503),
                    "with_retry_after": sum(1 for status, ra, _ in extra if status == 503 and ra),
                    "slowest_answer_ms": max(seconds for _, _, seconds in extra) * 1000,
                    "all_answered_in_ms": (time.monotonic() - began) * 1000,
                }
                print(json.dumps(capacity), flush=True)
        finally:
            holder.stop()
            server.stop()

    base = results[0]
    print(f"\n{'streams':>8} {'read p50':>9} {'(x)':>6} {'read p99':>9} {'write p50':>10} {'(x)':>6} "
          f"{'write p99':>10} {'deliv p50':>10} {'deliv p99':>10} {'all got all':>12}")
    for r in results:
        print(f"{r['streams']:>8} {r['read_p50_ms']:>7.2f}ms {r['read_p50_ms'] / base['read_p50_ms']:>6.2f} "
              f"{r['read_p99_ms']:>7.2f}ms {r['write_p50_ms']:>8.2f}ms "
              f"{r['write_p50_ms'] / base['write_p50_ms']:>6.2f} {r['write_p99_ms']:>8.2f}ms "
              + (f"{r['delivery_p50_ms']:>8.1f}ms {r['delivery_p99_ms']:>8.1f}ms "
                 f"{str(r['every_stream_got_every_event']):>12}" if "delivery_p50_ms" in r else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"medians": results, "rounds": rounds,
                                    "past_capacity": capacity}, indent=2))


if __name__ == "__main__":
    main()
