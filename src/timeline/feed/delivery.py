"""Delivering webhooks: signed CloudEvents, retried on the Standard Webhooks schedule.

Each event goes to each matching endpoint as one message whose ``webhook-id`` is derived from
the endpoint and the event, so it is the same on every try and after any restart. A try
succeeds on a 2xx answer; a 410 disables the endpoint; anything else (another status, a redirect,
which is never followed, a timeout, a refused address) is tried again after the next delay of
the schedule, with jitter, or later if the answer's ``Retry-After`` asks for it. After the last
try the event is listed as a failure and the endpoint goes on with its next event.
"""

from __future__ import annotations

import hashlib
import logging
import random
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Sequence

import urllib3
from standardwebhooks.webhooks import Webhook

from timeline import __version__
from timeline.events import event_type
from timeline.feed.cloudevents import dumps, to_cloudevent
from timeline.feed.urlsafety import RefusedURL, Resolver, Target, check_url, system_resolver
from timeline.feed.webhooks import Endpoint, WebhookStore

log = logging.getLogger("timeline.webhooks")

# Delays before the 2nd, 3rd, ... try: the Standard Webhooks spec's example schedule, so ten
# tries in all over about three days.
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.2  # each delay is stretched by up to this fraction, so retries do not arrive in step
MAX_RETRY_AFTER = 86400.0
TIMEOUT = 15.0
LEASE = 60.0  # longer than one try can take
POLL = 0.5
SCAN = 200  # events looked at per claim when an endpoint skips types it does not want
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


@dataclass(frozen=True)
class Result:
    """How one try went."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def message_id(webhook_id: str, cloudevent_id: str) -> str:
    """The ``webhook-id``: one per event and endpoint, the same on every try."""
    digest = hashlib.sha256(f"{webhook_id}\n{cloudevent_id}".encode()).hexdigest()
    return "msg_" + digest[:32]


def signed_headers(secret: str, msg_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers, names in lower case."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body),
    }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


class HttpSender:
    """POSTs a body to a webhook URL: no redirects, a 15 s timeout, only to checked addresses.

    The host is resolved and checked just before the connection, and the connection goes to
    an address that passed; the name is not resolved again in between.
    """

    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver,
                 timeout: float = TIMEOUT):
        self.allow_private = allow_private
        self.resolver = resolver
        self.timeout = timeout

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> Result:
        try:
            target = check_url(url, self.allow_private, self.resolver)
        except RefusedURL as exc:
            return Result(None, f"refused: {exc.detail}")
        error = "no address to connect to"
        for address in target.addresses:
            try:
                return self._post(target, address, body, headers)
            except urllib3.exceptions.NewConnectionError as exc:
                error = f"cannot connect to {address}: {exc}"  # nothing sent: try the next address
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                # Timeouts, resets, TLS failures: the try failed and is retried on schedule.
                return Result(None, f"{type(exc).__name__}: {exc}")
        return Result(None, error)

    def _post(self, target: Target, address: str, body: bytes, headers: dict[str, str]) -> Result:
        options: dict[str, Any] = {
            "timeout": urllib3.Timeout(total=self.timeout), "retries": False, "maxsize": 1,
        }
        if target.scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                address, target.port, server_hostname=target.host, assert_hostname=target.host,
                ssl_context=ssl.create_default_context(), **options,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, target.port, **options)
        # Lower-case names for every header, including the ones urllib3 would otherwise add.
        all_headers = {
            "host": target.host_header,
            "content-type": CONTENT_TYPE,
            "content-length": str(len(body)),
            "user-agent": f"timeline-webhooks/{__version__}",
            "accept-encoding": "identity",
            **headers,
        }
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers=all_headers, redirect=False,
                retries=False, assert_same_host=False, preload_content=False,
            )
            try:
                response.read(64 * 1024, decode_content=False)  # the answer's body is not needed
            finally:
                response.release_conn()
        finally:
            pool.close()
        status = response.status
        if 200 <= status < 300:
            return Result(status)
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        return Result(status, f"HTTP {status}{note}", parse_retry_after(response.headers.get("retry-after")))


class DeliveryWorker:
    """Delivers due webhook messages; any number of these may run against one store."""

    def __init__(
        self,
        tracker: Any,
        *,
        store: WebhookStore | None = None,
        sender: Any | None = None,
        resolver: Resolver | None = None,
        schedule: Sequence[float] = RETRY_SCHEDULE,
        jitter: float = JITTER,
        now: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        lease: float = LEASE,
        poll: float = POLL,
        threads: int = 4,
        owner: str | None = None,
    ):
        self.app = tracker.app
        self.store = store or WebhookStore(tracker.settings)
        self.sender = sender or HttpSender(
            allow_private=tracker.settings.webhook_allow_private,
            resolver=resolver or system_resolver,
        )
        self.schedule = tuple(schedule)
        self.jitter = jitter
        self.now = now
        self.rng = rng
        self.lease = lease
        self.poll = poll
        self.threads = max(1, threads)
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"

    # One step at a time (tests drive these directly) -------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Serve every due endpoint once; the number of endpoints that made progress."""
        served = 0
        ids = self.store.due(self.now(), self.app.head())
        random.shuffle(ids)  # several threads or workers then rarely race for the same one
        for webhook_id in ids:
            if stop is not None and stop.is_set():
                break
            if self.serve(webhook_id):
                served += 1
        return served

    def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Deliver until nothing is due now; the number of steps taken."""
        steps = 0
        for _ in range(max_rounds):
            done = self.run_once()
            if not done:
                return steps
            steps += done
        return steps

    def serve(self, webhook_id: str) -> bool:
        """Claim one endpoint and settle its next event; False if there was nothing to do."""
        now = self.now()
        if not self.store.claim(webhook_id, self.owner, now, now + self.lease):
            return False
        try:
            endpoint = self.store.get(webhook_id)
            if endpoint is None or not endpoint.active:
                return False  # deleted or disabled meanwhile: nothing to release
            return self._serve(endpoint)
        except Exception:
            log.exception("webhook %s: delivery failed unexpectedly", webhook_id)
            self.store.release(webhook_id, self.owner, next_try_at=self.now() + self.poll)
            return False

    def _serve(self, endpoint: Endpoint) -> bool:
        through = endpoint.delivered_through
        target = None
        for position, event in self.app.events_after(endpoint.delivered_through, SCAN):
            if endpoint.wants(event_type(event)):
                target = (position, event)
                break
            through = position
        if target is None:
            self.store.release(endpoint.id, self.owner, through=through)
            return through > endpoint.delivered_through
        position, event = target
        tries = endpoint.attempts + 1 if endpoint.pending_position == position else 1
        cloudevent = to_cloudevent(position, event)
        body = dumps(cloudevent)
        msg_id = message_id(endpoint.id, cloudevent["id"])
        headers = signed_headers(endpoint.secret, msg_id, body, datetime.now(timezone.utc))
        result = self.sender.send(endpoint.url, body.encode(), headers)
        if result.ok:
            assert result.status is not None
            self.store.delivered(endpoint.id, self.owner, position, result.status)
        elif result.status == 410:
            log.warning("webhook %s answered 410 Gone: disabled", endpoint.id)
            self.store.disable(endpoint.id, self.owner, "the endpoint answered 410 Gone", 410)
        elif tries > len(self.schedule):
            log.warning("webhook %s: giving up on position %s after %s tries: %s",
                        endpoint.id, position, tries, result.error)
            self.store.give_up(endpoint.id, self.owner, position, msg_id, tries, result.status,
                               result.error)
        else:
            delay = self.schedule[tries - 1] * (1 + self.jitter * self.rng())
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            self.store.retry_later(endpoint.id, self.owner, through, position, tries,
                                   self.now() + delay, result.status, result.error)
        return True

    # Running in the background -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, with ``threads`` loops so one slow endpoint holds up no other."""
        helpers = [
            threading.Thread(target=self._loop, args=(stop,), name=f"timeline-webhooks-{n}", daemon=True)
            for n in range(1, self.threads)
        ]
        for helper in helpers:
            helper.start()
        self._loop(stop)
        for helper in helpers:
            helper.join()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                served = self.run_once(stop)
            except Exception:
                log.exception("webhook delivery loop failed; trying again")
                served = 0
            if not served:
                stop.wait(self.poll)


def start_delivery_worker(tracker: Any, stop: threading.Event, **options: Any) -> threading.Thread:
    """Start delivering webhooks in the background until ``stop`` is set; join the thread to wait."""
    worker = DeliveryWorker(tracker, **options)
    thread = threading.Thread(target=worker.run, args=(stop,), name="timeline-webhooks", daemon=True)
    thread.start()
    return thread
