"""Delivering webhooks: signed CloudEvents, each retried on its own Standard Webhooks schedule.

Each event goes to each matching endpoint as one message whose ``webhook-id`` is derived from
the endpoint and the event, so it is the same on every try, after any restart and in a replay.
A try succeeds on a 2xx answer; a 410 disables the endpoint; anything else (another status, a
redirect, which is never followed, a timeout, a refused address) is tried again after the next
delay of the schedule, with jitter, or later if the answer's ``Retry-After`` asks for it. After
the last try the event is listed as a failure. Delivery is at least once and not in order: an
event that fails waits on its own schedule while the events after it go on.

A worker is one dispatcher thread and a bounded pool of sender threads. The dispatcher hands new
events out (a try per event and endpoint), claims due tries with leases, as many as there are
free senders, and a cap per endpoint keeps a slow endpoint from taking many of them: a slow or
dead endpoint holds at most a few senders while the others carry on.
"""

from __future__ import annotations

import concurrent.futures
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
from timeline.feed.cloudevents import dumps, to_cloudevent
from timeline.feed.filters import UnknownRule
from timeline.feed.urlsafety import RefusedURL, Resolver, Target, check_url, system_resolver
from timeline.feed.webhooks import Endpoint, Try, WebhookStore

log = logging.getLogger("timeline.webhooks")

# Delays before the 2nd, 3rd, ... try: the Standard Webhooks spec's example schedule, so ten
# tries in all over about three days.
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.2  # each delay is stretched by up to this fraction, so retries do not arrive in step
MAX_RETRY_AFTER = 86400.0
TIMEOUT = 15.0
LEASE = 60.0  # longer than one try can take
POLL = 0.5
SCAN = 500  # events looked at per endpoint per round when handing out
SENDERS = 32  # sender threads per worker
IN_FLIGHT = 4  # tries in flight to one endpoint at a time (one while it is failing)
DISABLE_AFTER = 5 * 86400.0  # an endpoint whose every try has failed this long is disabled
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
    """Delivers due webhook tries; any number of these may run against one store."""

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
        threads: int = SENDERS,
        in_flight: int = IN_FLIGHT,
        disable_after: float = DISABLE_AFTER,
        owner: str | None = None,
    ):
        self.tracker = tracker
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
        self.in_flight = max(1, in_flight)
        self.disable_after = disable_after
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self._targets: dict[str, tuple[str, str]] = {}

    # Handing events out ------------------------------------------------------------------------

    def hand_out(self) -> int:
        """Give each wanted new (or replayed) event a try per endpoint; the tries made."""
        head = self.tracker.head()
        pages: dict[int, list[tuple[int, Any]]] = {}  # endpoints at one cursor share a read

        def page(after: int) -> list[tuple[int, Any]]:
            if after not in pages:
                pages[after] = self.tracker.events_after(after, SCAN)
            return pages[after]

        made = 0
        for endpoint in self.store.behind(head):
            try:
                made += self._hand_out(endpoint, head, page)
            except UnknownRule:
                pass  # the read model has not caught up with the rule yet: next round
        return made

    def _hand_out(self, endpoint: Endpoint, head: int,
                  page: Callable[[int], list[tuple[int, Any]]]) -> int:
        made = 0
        now = self.now()
        if endpoint.handed_through < head:
            rows = [row for row in page(endpoint.handed_through) if row[0] <= head]
            if rows:
                wanted = [p for p, _ in endpoint.filter.select(rows, self.tracker.rule_facets)]
                if self.store.hand_out(endpoint.id, endpoint.handed_through, rows[-1][0], wanted, now):
                    made += len(wanted)
        if endpoint.replay_after is not None:
            through = endpoint.replay_through or 0
            rows = [row for row in page(endpoint.replay_after) if row[0] <= through]
            wanted = [p for p, _ in endpoint.filter.select(rows, self.tracker.rule_facets)]
            last = rows[-1][0] if rows else through
            if self.store.hand_out_replay(endpoint.id, endpoint.replay_after, last, wanted, now,
                                          done=last >= through):
                made += len(wanted)
        return made

    # Sending -----------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Try]:
        now = self.now()
        return self.store.claim(self.owner, now, now + self.lease, limit, self.in_flight)

    def messages(self, claimed: Sequence[Try]) -> dict[int, tuple[dict[str, Any], str]]:
        """The CloudEvent and its body for each position claimed, each event read once."""
        found: dict[int, tuple[dict[str, Any], str]] = {}
        for position in sorted({tried.position for tried in claimed}):
            rows = self.tracker.events_after(position - 1, 1)
            if rows and rows[0][0] == position:
                cloudevent = to_cloudevent(position, rows[0][1])
                found[position] = (cloudevent, dumps(cloudevent))
        return found

    def deliver(self, tried: Try, message: tuple[dict[str, Any], str] | None = None) -> bool:
        """Send one claimed try and settle it; False if it could not be sent."""
        try:
            return self._deliver(tried, message or self.messages([tried]).get(tried.position))
        except Exception:
            log.exception("webhook %s: delivery of %s failed unexpectedly", tried.webhook_id,
                          tried.position)
            self.store.release(tried, self.owner)
            return False

    def _deliver(self, tried: Try, message: tuple[dict[str, Any], str] | None) -> bool:
        # An endpoint's URL and secret never change, and a claim is only ever of an active one.
        target = self._targets.get(tried.webhook_id)
        if target is None:
            target = self.store.target(tried.webhook_id)
            if target is not None:
                self._targets[tried.webhook_id] = target
        if target is None or message is None:
            self.store.release(tried, self.owner)
            return False
        url, secret = target
        cloudevent, body = message
        msg_id = message_id(tried.webhook_id, cloudevent["id"])
        headers = signed_headers(secret, msg_id, body, datetime.now(timezone.utc))
        result = self.sender.send(url, body.encode(), headers)
        now = self.now()
        settle = (tried, self.owner, cloudevent["id"], msg_id)
        attempt = tried.attempts + 1
        if result.ok:
            assert result.status is not None
            self.store.delivered(*settle, result.status, now)
        elif result.status == 410:
            log.warning("webhook %s answered 410 Gone: disabled", tried.webhook_id)
            self.store.disable(*settle, "the endpoint answered 410 Gone", 410, now)
        elif attempt > len(self.schedule):
            log.warning("webhook %s: giving up on position %s after %s tries: %s",
                        tried.webhook_id, tried.position, attempt, result.error)
            self.store.give_up(*settle, result.status, result.error, now, self.disable_after)
        else:
            delay = self.schedule[attempt - 1] * (1 + self.jitter * self.rng())
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            self.store.retry_later(*settle, result.status, result.error, now, now + delay,
                                   self.disable_after)
        return True

    # Running in the background -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: this thread hands out and claims, ``threads`` send."""
        wake = threading.Event()  # a sender is free again
        busy: set[concurrent.futures.Future] = set()
        pool = concurrent.futures.ThreadPoolExecutor(self.threads, "timeline-webhooks-send")
        try:
            while not stop.is_set():
                claimed: list[Try] = []
                wake.clear()
                try:
                    self.hand_out()
                    busy = {future for future in busy if not future.done()}
                    claimed = self.claim(self.threads - len(busy))
                    messages = self.messages(claimed)
                    for tried in claimed:
                        future = pool.submit(self.deliver, tried, messages.get(tried.position))
                        future.add_done_callback(lambda _: wake.set())
                        busy.add(future)
                except Exception:
                    log.exception("webhook delivery loop failed; trying again")
                if not claimed:
                    wake.wait(self.poll)
        finally:
            pool.shutdown(wait=True)


def start_delivery_worker(tracker: Any, stop: threading.Event, **options: Any) -> threading.Thread:
    """Start delivering webhooks in the background until ``stop`` is set; join the thread to wait."""
    worker = DeliveryWorker(tracker, **options)
    thread = threading.Thread(target=worker.run, args=(stop,), name="timeline-webhooks", daemon=True)
    thread.start()
    return thread
