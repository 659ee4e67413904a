"""Operability: /healthz, /readyz and Prometheus /metrics, and the request metrics behind them.

Request counts, latencies and live subscribers are kept by each server process; with several
processes (``serve --workers N``) prometheus-client's multiprocess mode adds them up from files
in a directory of the run (``Settings.metrics_dir``). The read-model lag and the webhook backlog
are read from the stores when scraped, so any process answers them for all.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from flask import Flask, Response, current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from timeline.schemas import ProblemSchema
from timeline.web import current_tracker
from timeline.web.errors import problem

# The read model is caught up on demand by every read; a few events written meanwhile by other
# processes do not make a server unready.
READY_MAX_LAG = 100

REQUESTS = Counter("timeline_http_requests", "HTTP requests answered, by route and status.",
                   ["method", "route", "status"])
LATENCY = Histogram("timeline_http_request_duration_seconds",
                    "Time to answer a request (to its first byte for streams), by route.",
                    ["method", "route"])
SUBSCRIBERS = Gauge("timeline_sse_subscribers", "Open live event streams (SSE).",
                    multiprocess_mode="livesum")

blp = Blueprint("ops", __name__, description="Liveness, readiness and metrics, for operators.")


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


class ReadySchema(Schema):
    status = fields.String(metadata={"example": "ready"})
    head = fields.Integer(metadata={"description": "The event store's newest position."})
    readmodel_position = fields.Integer(metadata={"description": "The read models' position."})
    lag = fields.Integer(metadata={"description": "Events the read models are behind."})


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(summary="Liveness: 200 while the process answers")
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, str]:
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(summary="Readiness: the event store answers and the read models are caught up",
             description=f"503 with the reason otherwise. The read models are caught up first, "
                         f"as any read does; up to {READY_MAX_LAG} events written meanwhile are "
                         f"tolerated.")
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ProblemSchema, content_type="application/problem+json",
                      description="Not ready, with the reason.")
    def get(self) -> Any:
        tracker = current_tracker()
        try:
            tracker.catch_up()
            head = tracker.head()
        except Exception as exc:  # any failure of the store is a reason not to take traffic
            current_app.logger.warning("readiness: the event store does not answer: %s", exc)
            return problem(503, "Not ready", f"The event store does not answer: {exc}",
                           {"event_store": "does not answer"}, slug="not-ready")
        position = tracker.readmodel_position()
        lag = max(0, head - position)
        if lag > READY_MAX_LAG:
            return problem(503, "Not ready",
                           f"The read models are {lag} events behind the event store "
                           f"(at most {READY_MAX_LAG} are tolerated).",
                           {"read_models": f"{lag} events behind"}, slug="not-ready")
        return {"status": "ready", "head": head, "readmodel_position": position, "lag": lag}


class StoreCollector:
    """Gauges read from the stores at scrape time: the same for every process."""

    def __init__(self, tracker: Any, webhooks: Any):
        self._tracker = tracker
        self._webhooks = webhooks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        head = self._tracker.head()
        yield GaugeMetricFamily("timeline_event_store_head", "The newest position in the event store.",
                                value=head)
        yield GaugeMetricFamily("timeline_readmodel_lag_events",
                                "Events recorded but not yet in the read models.",
                                value=max(0, head - self._tracker.readmodel_position()))
        backlog = GaugeMetricFamily("timeline_webhook_backlog_events",
                                    "Events each active webhook endpoint has still to settle.",
                                    labels=["webhook"])
        for webhook_id, events in sorted(self._webhooks.backlog(head).items()):
            backlog.add_metric([webhook_id], events)
        yield backlog


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(summary="Prometheus metrics (text exposition format)", responses={
        200: {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
    })
    def get(self) -> Response:
        tracker = current_tracker()
        metrics_dir = tracker.settings.metrics_dir
        if metrics_dir is not None:
            processes = CollectorRegistry()
            MultiProcessCollector(processes, path=str(metrics_dir))
        else:
            processes = REGISTRY
        stores = CollectorRegistry()
        stores.register(StoreCollector(tracker, _webhooks(tracker)))
        body = generate_latest(processes) + generate_latest(stores)
        return current_app.response_class(body, mimetype=None,
                                          headers={"Content-Type": CONTENT_TYPE_LATEST})


def _webhooks(tracker: Any) -> Any:
    """The app's webhook store (the same one the webhook routes use)."""
    from timeline.feed.webhooks import WebhookStore

    store = current_app.extensions.get("timeline_webhooks")
    if store is None:
        store = current_app.extensions["timeline_webhooks"] = WebhookStore(tracker.settings)
    return store


def _started() -> None:
    g.timeline_started = time.perf_counter()


def _finished(response: Response) -> Response:
    started = g.pop("timeline_started", None)
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        observe_request(request.method, route, response.status_code, time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_started)
    app.after_request(_finished)
    app.extensions["timeline_api"].register_blueprint(blp)
