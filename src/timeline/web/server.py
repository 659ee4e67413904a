"""Serving the app in production (uvicorn, and gunicorn for several processes), with one log
line per request."""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger("timeline.requests")

# Threads answering requests in the Flask app, per process (event streams hold none).
THREADS = 8

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
            self.log_request(environ, seen["status"], 0, started)
            raise
        return _LoggedBody(body, lambda sent: self.log_request(environ, seen["status"], sent, started))

    def log_request(self, environ: dict, status: str, sent: int, started: float) -> None:
        """One line for a finished request (``started`` from :func:`time.perf_counter`)."""
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
    for name in ("timeline",):
        logger = logging.getLogger(name)
        if any(getattr(h, "_timeline", False) for h in logger.handlers):
            continue  # already set up (a forked server process inherits it)
        handler._timeline = True  # type: ignore[attr-defined]
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


# On SIGTERM or Ctrl-C, requests in progress get this long to finish; open event streams end
# at once (their clients reconnect with Last-Event-ID to another server).
GRACEFUL_SECONDS = 10


def _streaming_server(front: Any) -> Any:
    """A uvicorn server that ends the open event streams as soon as it is asked to stop."""
    import uvicorn

    class StreamingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            front.close()

    return StreamingServer


def _no_delay(sockets: list[Any]) -> None:
    """Send small responses at once on the connections these listening sockets accept.

    asyncio turns Nagle's algorithm off only on sockets it makes itself; on a socket handed to
    it (ours, or gunicorn's) a keep-alive client would wait for a delayed ACK on every request.
    Linux gives accepted connections the listening socket's TCP_NODELAY.
    """
    import socket

    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _uvicorn_config(front: Any, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(front, interface="asgi3", lifespan="on", log_config=None,
                          access_log=False, timeout_graceful_shutdown=GRACEFUL_SECONDS, **options)


def allow_many_connections() -> None:
    """Let this process (and its children) open as many sockets as the system allows: every
    live subscriber holds one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else max(soft, 65536), hard))


def serve(app: Any, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve the Flask ``app`` in this process until interrupted (Ctrl-C or SIGTERM).

    ``announce`` receives the address actually bound, so ``--port 0`` can be used.
    """
    import socket

    from timeline.web.asgi import Front

    allow_many_connections()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    _no_delay([sock])
    front = Front(app)
    server = _streaming_server(front)(_uvicorn_config(front))
    # uvicorn stops on SIGTERM and SIGINT, then raises the signal again with the handler it
    # found: this one, so that a stop ends here normally; a signal that comes before uvicorn
    # has set up its own handlers stops the server as soon as it starts.
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        if ":" in str(bound_host):
            bound_host = f"[{bound_host}]"
        announce(f"http://{bound_host}:{bound_port}/")
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def serve_workers(make_app: Callable[[], Any], host: str, port: int, workers: int,
                  announce: Callable[[str], None]) -> None:
    """Serve with gunicorn: ``workers`` processes, each building its own app after the fork.

    Each process opens its own connections (SQLite files or a PostgreSQL pool), runs its own
    webhook delivery thread and its own event-stream broadcaster; the store's write lock and
    the delivery leases keep them in step. Each is served like ``serve``: an event loop for the
    streams, Flask on a thread pool for the rest.
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from uvicorn_worker import UvicornWorker

    from timeline.web.asgi import Front

    class Worker(UvicornWorker):
        CONFIG_KWARGS = {"interface": "asgi3", "lifespan": "on", "access_log": False,
                         "timeout_graceful_shutdown": GRACEFUL_SECONDS}

        async def _serve(self) -> None:
            self.config.app = self.wsgi
            server = _streaming_server(self.wsgi)(config=self.config)
            self._install_sigquit_handler()
            _no_delay(self.sockets)
            await server.serve(sockets=self.sockets)
            if not server.started:
                sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def worker_exited(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Workers(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", Worker)
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", GRACEFUL_SECONDS + 10)
            self.cfg.set("backlog", 2048)
            self.cfg.set("accesslog", None)
            self.cfg.set("proc_name", "timeline")
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("child_exit", worker_exited)
            self.cfg.set("when_ready", lambda server: announce(
                f"http://{host}:{server.LISTENERS[0].sock.getsockname()[1]}/ ({workers} workers)"))

        def load(self) -> Any:
            configure_logging()
            return Front(make_app())

    allow_many_connections()
    Workers().run()
