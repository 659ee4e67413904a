"""The integrator feed over HTTP: paged CloudEvents, the live SSE stream, Atom, webhooks."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, abort, current_app, json, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from timeline.domain.errors import NotFound
from timeline.feed import atom
from timeline.feed.filters import EventFilter, RuleFacets, keeps
from timeline.feed.paging import parse_limit, parse_position, read_filtered_page
from timeline.feed.schemas import (
    DATA_SCHEMAS, DeliveryListSchema, DeliveryQuerySchema, EventPageSchema, ReplayAcceptedSchema,
    ReplaySchema, WebhookCreatedSchema, WebhookCreateSchema, WebhookListSchema, WebhookSchema,
)
from timeline.feed.sse import PollWaiter, StreamLimits, Waiter, event_stream
from timeline.feed.urlsafety import system_resolver
from timeline.feed.webhooks import KEEP_ATTEMPTS, WebhookStore
from timeline.schemas import ProblemSchema
from timeline.web import current_tracker
from timeline.web.auth import require_write

# A page that can never change again may be kept by any cache for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

blp = Blueprint(
    "feed", __name__, url_prefix="/api/v1",
    description="The integrator feed: every recorded event as a CloudEvent, paged, live, or pushed.",
)
atom_blp = FlaskBlueprint("atom", __name__)

_AFTER = {
    "in": "query", "name": "after", "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Only events with a position greater than this (a non-negative integer; "
                   "anything else is 400).",
}
_LIMIT = {
    "in": "query", "name": "limit", "required": False,
    "schema": {"type": "integer", "minimum": 1, "default": 100},
    "description": "At most this many events; values above 1000 are served as 1000.",
}
_LAST_EVENT_ID = {
    "in": "header", "name": "Last-Event-ID", "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Resume after this position (EventSource sends it on reconnecting); wins over `after`.",
}
_FILTERS = [
    {"in": "query", "name": name, "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}}, "description": description}
    for name, description in (
        ("rule", "Only events of this rule (the CloudEvent's `subject`)."),
        ("jurisdiction", "Only events of rules issued by this code (ISO 3166-1 alpha-2 or EU)."),
        ("instrument", "Only events of rules of this instrument."),
        ("type", "Only events of this CloudEvent type."),
    )
]
_FILTERS_NOTE = (
    " Filters (`rule`, `jurisdiction`, `instrument`, `type`; each may be repeated or hold "
    "values separated by commas, any of which matches) keep only the events that match every "
    "filter given; `next_after` then moves past the events looked at, matching or not, so "
    "paging on it still gives every matching event exactly once, in order. Bad codes are 422."
)
_BEARER = [{"bearerAuth": []}]


def _webhooks() -> WebhookStore:
    store = current_app.extensions.get("timeline_webhooks")
    if store is None:
        store = WebhookStore(current_tracker().settings)
        current_app.extensions["timeline_webhooks"] = store
    return store


def _etag(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


# The JSON feed -----------------------------------------------------------------------------------


@blp.route("/events")
class Events(MethodView):
    @blp.doc(parameters=[_AFTER, _LIMIT, *_FILTERS], summary="Page through every recorded event",
             description=(
        "Events with a position greater than `after`, oldest first, as CloudEvents 1.0. Keep "
        "asking with `after` set to `next_after`: every event comes exactly once, in order. "
        "Positions only grow and may have gaps. A full page never changes and may be cached "
        "for a year; the last page carries an `ETag` and answers 304 to `If-None-Match` while "
        "nothing new is recorded." + _FILTERS_NOTE
    ))
    @blp.response(200, EventPageSchema, headers={
        "ETag": {"schema": {"type": "string"}}, "Cache-Control": {"schema": {"type": "string"}},
    })
    @blp.alt_response(304, description="Not modified (the last page, unchanged).")
    @blp.alt_response(400, schema=ProblemSchema, content_type="application/problem+json",
                      description="`after` or `limit` is not a valid number.")
    @blp.alt_response(422, schema=ProblemSchema, content_type="application/problem+json",
                      description="A filter names an unknown code, instrument, type or a bad rule id.")
    def get(self) -> Response:
        after = parse_position(request.args.get("after"), "after")
        limit = parse_limit(request.args.get("limit"))
        wanted = EventFilter.from_query(request.args)
        page = read_filtered_page(current_tracker(), after, limit, wanted)
        body = json.dumps(page.body(), ensure_ascii=False).encode()
        response = current_app.response_class(body, mimetype="application/json")
        if page.full:
            # Everything but `head` is final; the tag leaves it out so that revalidation agrees.
            final = json.dumps([page.events, page.next_after], ensure_ascii=False).encode()
            response.set_etag(_etag(final))
            response.headers["Cache-Control"] = IMMUTABLE
        else:
            response.set_etag(_etag(body))
            response.headers["Cache-Control"] = REVALIDATE
        return response.make_conditional(request)


def stream_waiter(poll_seconds: float = 0.5) -> Waiter:
    """How a stream (or a process's broadcaster) waits for new events."""
    factory = current_app.config.get("TIMELINE_FEED_WAITER")
    if factory is not None:
        return factory(current_tracker())
    if current_tracker().settings.on_postgres:
        from timeline.feed.listen import notify_waiter

        return notify_waiter(current_tracker())
    return PollWaiter(current_app.config.get("TIMELINE_FEED_POLL_SECONDS", poll_seconds))


def stream_limits() -> StreamLimits:
    """Heartbeat and bounds; the bounds exist so that tests can end a stream (app config only)."""
    config = current_app.config
    return StreamLimits(
        heartbeat=float(config.get("TIMELINE_SSE_HEARTBEAT_SECONDS", 15.0)),
        max_events=config.get("TIMELINE_SSE_MAX_EVENTS"),
        max_seconds=config.get("TIMELINE_SSE_MAX_SECONDS"),
    )


# One Server-Sent Event, as a client's parser sees it.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The event's position."},
        "event": {"type": "string", "description": "The CloudEvent type."},
        "data": {"type": "string", "description": "The CloudEvent, as JSON text."},
        "retry": {"type": "integer"},
    },
}


@blp.route("/events/stream")
class EventStream(MethodView):
    @blp.doc(parameters=[_AFTER, _LAST_EVENT_ID, *_FILTERS],
             summary="Follow recorded events live (SSE)", description=(
        "Server-Sent Events: `id:` is the position, `event:` the CloudEvent type and `data:` "
        "the CloudEvent JSON. Without `Last-Event-ID` or `after` the stream starts at the head "
        "(new events only); `Last-Event-ID` wins over `after`. With `rule`, `jurisdiction` or "
        "`instrument`, only the events matching every filter given come, still in order and "
        "without gaps within them. A comment line comes at least every 15 seconds. A server "
        "that holds as many subscribers as it may answers 503 with `Retry-After` at once."
    ))
    @blp.response(200, _SSE_EVENT, content_type="text/event-stream",
                  description="An endless event stream; each event is described by the schema.")
    @blp.alt_response(400, schema=ProblemSchema, content_type="application/problem+json",
                      description="`after` or `Last-Event-ID` is not a valid position.")
    @blp.alt_response(422, schema=ProblemSchema, content_type="application/problem+json",
                      description="A filter names an unknown rule id, jurisdiction, instrument "
                                  "or type, as on `GET /api/v1/events`.")
    @blp.alt_response(503, schema=ProblemSchema, content_type="application/problem+json",
                      headers={"Retry-After": {"schema": {"type": "integer"}}},
                      description="The server holds as many subscribers as it may; try again "
                                  "after `Retry-After` seconds.")
    def get(self) -> Response:
        tracker = current_tracker()
        # Both are checked; Last-Event-ID (a reconnecting client) wins over ?after=.
        after = parse_position(request.args.get("after"), "after", None)
        start = parse_position(request.headers.get("Last-Event-ID"), "Last-Event-ID", None)
        if start is None:
            start = after
        if start is None:
            start = tracker.head()
        wanted = EventFilter.from_query(request.args)
        keep = None if wanted.everything else keeps(wanted, RuleFacets(tracker).of)
        stream = event_stream(tracker.events_after, start, stream_waiter(), stream_limits(),
                              keep=keep)
        response = Response(stream, mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # ask proxies not to hold events back
        return response


# Webhooks ----------------------------------------------------------------------------------------


def _resolver() -> Any:
    return current_app.config.get("TIMELINE_WEBHOOK_RESOLVER") or system_resolver


@blp.route("/webhooks")
class Webhooks(MethodView):
    @require_write
    @blp.doc(security=_BEARER, summary="List webhook endpoints (write token)")
    @blp.response(200, WebhookListSchema)
    def get(self) -> dict[str, Any]:
        return {"items": [endpoint.public() for endpoint in _webhooks().list()]}

    @require_write
    @blp.doc(security=_BEARER, summary="Register a webhook endpoint (write token)", description=(
        "Every matching event recorded after registration is POSTed to `url` as a CloudEvent "
        "(`application/cloudevents+json`), signed by the Standard Webhooks scheme with the "
        "returned `whsec_` secret: headers `webhook-id` (the same on every try of one event), "
        "`webhook-timestamp` and `webhook-signature` (`v1,` HMAC-SHA256). An event is sent when "
        "it matches every filter given (`types`, `rules`, `jurisdictions`, `instruments`; any "
        "value of a filter matches). A 2xx answer is a delivery; 410 disables the endpoint; "
        "anything else is tried again after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and "
        "24 h (with jitter; later if `Retry-After` asks), and an endpoint whose every try has "
        "failed for 5 days is disabled. Delivery is at least once and not in order: each event "
        "has its own schedule, so one refused event never holds back the others; reconcile "
        "from `GET /api/v1/events` by each message's `sequence`. Redirects are not followed; "
        "each try times out after 15 s. URLs that are not http(s), or whose host resolves to a "
        "loopback, private, link-local or multicast address, are refused (422) unless the "
        "server runs with TIMELINE_WEBHOOK_ALLOW_PRIVATE=1."
    ))
    @blp.arguments(WebhookCreateSchema())
    @blp.response(201, WebhookCreatedSchema)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        endpoint, secret = _webhooks().register(
            body["url"], body.get("types"), current_tracker().head(), resolver=_resolver(),
            rules=body.get("rules"), jurisdictions=body.get("jurisdictions"),
            instruments=body.get("instruments"),
        )
        created = {
            "id": endpoint.id, "secret": secret, "url": endpoint.url, "types": list(endpoint.types),
            "rules": list(endpoint.rules), "jurisdictions": list(endpoint.jurisdictions),
            "instruments": list(endpoint.instruments), "created_at": endpoint.created_at,
            "after": endpoint.start_after,
        }
        return created, 201, {"Location": url_for("feed.Webhook", webhook_id=endpoint.id)}


@blp.route("/webhooks/<webhook_id>")
class Webhook(MethodView):
    @require_write
    @blp.doc(security=_BEARER, summary="One webhook endpoint and its delivery state (write token)")
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id: str) -> dict[str, Any]:
        endpoint = _webhooks().get(webhook_id)
        if endpoint is None:
            raise NotFound(f"No webhook {webhook_id!r}.")
        return endpoint.public()

    @require_write
    @blp.doc(security=_BEARER, summary="Remove a webhook endpoint (write token)")
    @blp.response(204)
    def delete(self, webhook_id: str) -> tuple[str, int]:
        if not _webhooks().delete(webhook_id):
            raise NotFound(f"No webhook {webhook_id!r}.")
        return "", 204


@blp.route("/webhooks/<webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @require_write
    @blp.doc(security=_BEARER, summary="An endpoint's recent tries, newest first (write token)",
             description="Each try with the status answered or the error, and when the event is "
                         "tried next; the newest 200 tries of each endpoint are kept.")
    @blp.arguments(DeliveryQuerySchema(), location="query")
    @blp.response(200, DeliveryListSchema)
    def get(self, query: dict[str, Any], webhook_id: str) -> dict[str, Any]:
        store = _webhooks()
        if store.get(webhook_id) is None:
            raise NotFound(f"No webhook {webhook_id!r}.")
        return {"items": store.attempts(webhook_id, min(query["limit"], KEEP_ATTEMPTS))}


@blp.route("/webhooks/<webhook_id>/replay")
class WebhookReplay(MethodView):
    @require_write
    @blp.doc(security=_BEARER, summary="Send an endpoint's events again (write token)",
             description="Every event after `after` that the endpoint's filters match is sent "
                         "again, each with the same `webhook-id` as before, on a fresh retry "
                         "schedule. Accepted at once; the events go out in the background.")
    @blp.arguments(ReplaySchema())
    @blp.response(202, ReplayAcceptedSchema)
    def post(self, body: dict[str, Any], webhook_id: str) -> tuple[dict[str, Any], int]:
        if not _webhooks().replay(webhook_id, body["after"]):
            raise NotFound(f"No webhook {webhook_id!r}.")
        return {"id": webhook_id, "after": body["after"]}, 202


# Atom --------------------------------------------------------------------------------------------


def _page_size() -> int:
    return int(current_app.config.get("TIMELINE_ATOM_PAGE_SIZE", atom.PAGE_SIZE))


def _atom_response(document: bytes, final: bool) -> Response:
    response = current_app.response_class(document, mimetype="application/atom+xml")
    response.set_etag(_etag(document))
    response.headers["Cache-Control"] = IMMUTABLE if final else REVALIDATE
    return response.make_conditional(request)


@atom_blp.route("/feed.atom")
def feed_atom() -> Response:
    """The newest events as Atom; older ones in archive pages linked by ``prev-archive``.
    Takes the feed's filters (``rule``, ``jurisdiction``, ``instrument``, ``type``)."""
    wanted = EventFilter.from_query(request.args)
    return _atom_response(
        atom.current_document(current_tracker(), request.url_root, _page_size(), wanted), False)


@atom_blp.route("/feed/archive/<int:number>.atom")
def feed_archive(number: int) -> Response:
    wanted = EventFilter.from_query(request.args)
    document = atom.archive_document(current_tracker(), request.url_root, number, _page_size(), wanted)
    if document is None:
        abort(404, description=f"Archive page {number} does not exist (yet).")
    return _atom_response(document, True)


def init_app(app: Flask) -> None:
    api = app.extensions["timeline_api"]
    for name, schema in DATA_SCHEMAS.values():
        if name not in api.spec.components.schemas:
            api.spec.components.schema(name, schema=schema)
    if "bearerAuth" not in api.spec.components.security_schemes:
        api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_blueprint(blp)
    app.register_blueprint(atom_blp)
