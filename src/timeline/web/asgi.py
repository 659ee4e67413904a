"""The server's front: the live event stream on an event loop, everything else in Flask's threads.

Why this serving model: an SSE subscriber mostly waits, so a thread per subscriber (waitress,
gunicorn's gthread) caps the server at its thread count. gevent would make waiting cheap, but
this app blocks in ways gevent cannot patch (sqlite3 calls, the store's ``fcntl.flock`` write
lock, psycopg), so one greenlet waiting for the lock could stall or deadlock its whole
process. Instead an ASGI server (uvicorn; under gunicorn for several processes) runs the one
long-lived route, the stream, as a coroutine fed by one broadcaster per process, and hands every
other request to the unchanged Flask app on a thread pool (a2wsgi), so reads and writes keep
the thread semantics, locks and connections they have always had.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from a2wsgi import WSGIMiddleware
from flask import Flask

from timeline.domain.errors import InvalidInput
from timeline.feed.filters import EventFilter
from timeline.feed.live import AtCapacity, Broadcaster
from timeline.feed.paging import BadFeedParameter, parse_position
from timeline.web import ops
from timeline.web.server import THREADS, RequestLog

STREAM_PATH = "/api/v1/events/stream"
# On SQLite the broadcaster looks for new events this often: one small read per process
# however many subscribers there are, and a new event reaches them within it.
BROADCAST_POLL_SECONDS = 0.1
# How long a client at capacity is asked to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 5

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Front:
    """An ASGI app: ``GET /api/v1/events/stream`` served natively, all else by the Flask app."""

    def __init__(self, app: Flask, threads: int = THREADS):
        from timeline.web.feed_api import stream_limits, stream_waiter

        self.flask = app
        self.tracker = app.extensions["timeline"]
        self.wsgi = WSGIMiddleware(RequestLog(app), workers=threads)
        self.request_log = RequestLog(app)
        with app.app_context():
            waiter = stream_waiter(BROADCAST_POLL_SECONDS)
            self.limits = stream_limits()
        self.broadcaster = Broadcaster(self.tracker, waiter, self.tracker.settings.max_subscribers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"] == STREAM_PATH and scope["method"] == "GET":
            asked = self._stream_request(scope)
            if asked is not None:
                await self._stream(scope, receive, send, *asked)
                return
        # Anything else, including a stream request with bad parameters (Flask answers 400).
        await self.wsgi(scope, receive, send)

    def close(self) -> None:
        """End every open stream: the server is stopping."""
        self.broadcaster.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _stream_request(scope: Scope) -> tuple[int | None, EventFilter] | None:
        """Where the stream starts and what it lets through; None if a parameter is bad."""
        args = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            after = parse_position(args["after"][0] if "after" in args else None, "after", None)
            start = parse_position(headers.get("last-event-id"), "Last-Event-ID", None)
            wanted = EventFilter.from_query(args)
        except (BadFeedParameter, InvalidInput):
            return None  # the Flask route answers it, as problem+json
        return (after if start is None else start), wanted

    async def _stream(self, scope: Scope, receive: Receive, send: Send,
                      start: int | None, wanted: EventFilter) -> None:
        started = time.perf_counter()
        status, sent = 200, [0]
        try:
            with self.broadcaster.slot():
                ops.SUBSCRIBERS.inc()
                try:
                    if start is None:
                        start = await asyncio.to_thread(self.tracker.head)
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),  # ask proxies not to hold events back
                    ]})
                    await self._follow(receive, send, start, wanted, sent)
                finally:
                    ops.SUBSCRIBERS.dec()
        except AtCapacity:
            status = 503
            await self._at_capacity(send, sent)
        finally:
            seconds = time.perf_counter() - started
            ops.observe_request("GET", STREAM_PATH, status, seconds)
            self.request_log.log_request(_environ(scope), str(status), sent[0], started)

    async def _follow(self, receive: Receive, send: Send, start: int, wanted: EventFilter,
                      sent: list[int]) -> None:
        """Send events until the stream ends or the client goes; a client that goes frees its slot."""

        async def pump() -> None:
            events = self.broadcaster.events(start, wanted, self.limits)
            try:
                async for chunk in events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sent[0] += len(chunk)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the connection is gone
                pass
            finally:
                await events.aclose()

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = {asyncio.ensure_future(pump()), asyncio.ensure_future(gone())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _at_capacity(self, send: Send, sent: list[int]) -> None:
        capacity = self.broadcaster.capacity
        body = json.dumps({
            "type": "/problems/service-unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": f"This server holds as many live subscribers as it may ({capacity}); "
                      f"try again in {RETRY_AFTER_SECONDS} seconds.",
            "errors": {},
        }).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        ]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        sent[0] = len(body)


def _environ(scope: Scope) -> dict[str, str]:
    """The few WSGI names the request log reads, from an ASGI scope."""
    client = scope.get("client") or ("-", 0)
    return {
        "REMOTE_ADDR": str(client[0]),
        "REQUEST_METHOD": scope["method"],
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
    }
