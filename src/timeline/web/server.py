"""Serving the app in production: waitress, with one log line per request."""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger("timeline.requests")

# Waitress answers on a pool of threads; SSE clients hold one each while connected.
THREADS = 8
# Waitress buffers a whole body before the app sees it. Bodies up to this size reach the app,
# which answers 413 as problem+json past 1 MiB; larger ones waitress refuses by itself.
MAX_BUFFERED_BODY = 8 * 1024 * 1024

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


class RequestLog:
    """WSGI middleware: one line per request, in Common Log Format plus the time taken.

    The line is written when the response ends (its iterable is closed), so a long response
    such as an event stream is logged with the bytes it really sent.
    """

    def __init__(self, app: WSGIApp, logger: logging.Logger = log):
        self.app = app
        self.logger = logger

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        seen: dict[str, str] = {"status": "-"}

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            seen["status"] = "500"
            self._log(environ, seen["status"], 0, started)
            raise
        return _LoggedBody(body, lambda sent: self._log(environ, seen["status"], sent, started))

    def _log(self, environ: dict, status: str, sent: int, started: float) -> None:
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        stamp = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        self.logger.info(
            '%s - - [%s] "%s %s %s" %s %d %.1fms',
            environ.get("REMOTE_ADDR", "-"), stamp, environ.get("REQUEST_METHOD", "-"), path,
            environ.get("SERVER_PROTOCOL", "-"), status, sent,
            (time.perf_counter() - started) * 1000,
        )


class _LoggedBody:
    """A response body that counts what it sends and reports once when closed."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]):
        self._body = body
        self._done = done
        self._sent = 0
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


def configure_logging() -> None:
    """Request lines and server messages on stderr, one per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("timeline", "waitress"):
        logger = logging.getLogger(name)
        if any(getattr(h, "_timeline", False) for h in logger.handlers):
            continue  # already set up (a forked server process inherits it)
        handler._timeline = True  # type: ignore[attr-defined]
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


def serve(app: WSGIApp, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve ``app`` with waitress until interrupted (Ctrl-C or SIGTERM).

    ``announce`` receives the address actually bound, so ``--port 0`` can be used.
    """
    from waitress import create_server

    server = create_server(RequestLog(app), host=host, port=port, threads=THREADS,
                           max_request_body_size=MAX_BUFFERED_BODY, ident="timeline")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        bound_host = server.effective_host
        if ":" in str(bound_host):
            bound_host = f"[{bound_host}]"
        announce(f"http://{bound_host}:{server.effective_port}/")
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()


def serve_workers(make_app: Callable[[], WSGIApp], host: str, port: int, workers: int,
                  announce: Callable[[str], None]) -> None:
    """Serve with gunicorn: ``workers`` processes, each building its own app after the fork.

    Each process opens its own connections (SQLite files or a PostgreSQL pool) and runs its own
    webhook delivery thread; the store's write lock and the delivery leases keep them in step.
    """
    from gunicorn.app.base import BaseApplication

    class Workers(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", THREADS)
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)
            self.cfg.set("proc_name", "timeline")
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("when_ready", lambda server: announce(
                f"http://{host}:{server.LISTENERS[0].sock.getsockname()[1]}/ ({workers} workers)"))

        def load(self) -> WSGIApp:
            configure_logging()
            return RequestLog(make_app())

    Workers().run()
