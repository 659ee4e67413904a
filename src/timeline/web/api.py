"""The JSON API at /api/v1: thin views over the tracker, schemas from timeline.schemas.

Every view validates its query string or body with a schema (400 for a bad query string, 422
for bad body fields), calls one :class:`~timeline.service.Tracker` method. Writes dump their answer through an output
schema; reads send the read model's answer as it is (already the contract's shape), written by
orjson, and their output schemas document it (a test checks real answers against the document).
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, request, send_from_directory, url_for
from flask_smorest import Blueprint
from webargs import core
from webargs.flaskparser import FlaskParser, abort

from timeline import fastjson
from timeline.domain.dates import PolicyDate
from timeline.domain.model import fingerprint
from timeline.schemas import (
    ActionSchema,
    CorrectionSchema,
    DiffQuerySchema,
    DiffSchema,
    HistoryQuerySchema,
    HistorySchema,
    IdempotencyHeaderSchema,
    RegisteredRuleSchema,
    RetractionSchema,
    RuleSchema,
    RulesQuerySchema,
    StateListSchema,
    StateQuerySchema,
    StateSchema,
    TimelinePageSchema,
    TimelineQuerySchema,
    WrittenSchema,
)
from timeline.service import Written
from timeline.web import current_tracker
from timeline.web.auth import require_write
from timeline.web.errors import problem

PREFIX = "/api/v1"
BEARER = "bearerAuth"


class BodyParser(FlaskParser):
    """webargs' parser, refusing JSON that Python parses but cannot handle or store."""

    def _raw_load_json(self, req: Any) -> Any:
        try:
            data = super()._raw_load_json(req)
        except RecursionError:
            abort(400, messages={"json": ["is nested too deeply"]},
                  message="The request body is nested too deeply.")
        if data is not core.missing and not _encodable(data):
            abort(400, messages={"json": ["has an unpaired surrogate"]},
                  message="The request body has a string with an unpaired surrogate (\\ud800-\\udfff).")
        return data


def _encodable(data: Any) -> bool:
    """Every string in a parsed JSON value can be written as UTF-8 (a loop: depth is unbounded)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = BodyParser()


blp = ApiBlueprint(
    "api", __name__, url_prefix=PREFIX,
    description="Rules, their states as of a day and as known at an instant, and the writes "
                "that record actions, corrections and retractions.",
)

# Path parameters, with examples from the bundled fixtures for readers of the document.
RULE_PARAM = {"in": "path", "name": "rule_id", "description": "The rule's id.",
              "schema": {"type": "string"}, "example": "us-h200-export-licensing-cn"}
ACTION_PARAM = {"in": "path", "name": "action_id", "description": "The action's id.",
                "schema": {"type": "string"}, "example": "us-h200-fee-25-2025-12-08"}

# Errors every operation may answer, documented once; their bodies are problem+json.
_READ_ERRORS = (404,)
_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422)


def _document_errors(statuses: tuple[int, ...]) -> Callable[[Callable], Callable]:
    from http import HTTPStatus

    def decorator(view: Callable) -> Callable:
        for status in statuses:
            view = blp.alt_response(status, response=HTTPStatus(status).name)(view)
        return view

    return decorator


def json_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Bodies must be declared JSON: anything else is 415, before the body is read."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mimetype = request.mimetype or ""
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            return problem(
                415, "Unsupported media type",
                f"The body must be JSON, sent with Content-Type: application/json "
                f"(not {request.content_type or 'none'}).",
                {"Content-Type": "must be application/json"},
            )
        return view(*args, **kwargs)

    return wrapper


def write(view: Callable[..., Any]) -> Callable[..., Any]:
    """A write: a bearer token first (401/403), then a JSON body (415), then the schemas."""
    view = blp.doc(security=[{BEARER: []}])(view)
    return require_write(json_only(view))


def _request(headers: dict[str, Any]) -> dict[str, str] | None:
    """What the tracker remembers of this request to tell a repeat from a new one."""
    key = headers.get("idempotency_key")
    if not key:
        return None
    body = request.get_json(silent=True)
    return {"key": key, "fingerprint": fingerprint([request.method, request.path, body])}


def _status(written: Written) -> int:
    """201 for a new event and for a replayed Idempotency-Key (its first answer); 200 when a
    repeated client id or identical registration stored nothing."""
    return 201 if written.created or written.replayed else 200


# Reads ---------------------------------------------------------------------------------------


def _answer(body: dict[str, Any]) -> Response:
    """A read's answer as the read model shapes it (the contract's shape, which the output
    schemas document), written by orjson: no per-field dump through the schemas."""
    return current_app.response_class(fastjson.dumps(body), mimetype="application/json")


@blp.route("/rules", methods=["GET"])
@blp.arguments(RulesQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.response(200, StateListSchema)
def list_rules(as_of: date | None = None, known_at: datetime | None = None,
               **params: Any) -> Response:
    """Every rule's state on a day, as known at an instant, ordered by rule id, a page at a
    time (see the cursor)."""
    return _answer(current_tracker().state_list(as_of, known_at, **params))


@blp.route("/rules/<rule_id>", methods=["GET"], parameters=[RULE_PARAM])
@blp.arguments(StateQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.response(200, StateSchema)
@_document_errors(_READ_ERRORS)
def get_rule(rule_id: str, as_of: date | None = None, known_at: datetime | None = None) -> Response:
    """One rule's state on a day, as known at an instant; 404 if it was not registered then."""
    return _answer(current_tracker().state(rule_id, as_of, known_at))


@blp.route("/rules/<rule_id>/history", methods=["GET"], parameters=[RULE_PARAM])
@blp.arguments(HistoryQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.response(200, HistorySchema)
@_document_errors(_READ_ERRORS)
def rule_history(rule_id: str, known_at: datetime | None = None) -> Response:
    """A rule's actions in effective order, each with its record time, position, corrections
    and retraction, as known at an instant."""
    at, items = current_tracker().history(rule_id, known_at)
    return _answer({"items": items, "rule_id": rule_id, "known_at": at})


@blp.route("/diff", methods=["GET"])
@blp.arguments(DiffQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.response(200, DiffSchema)
def diff(day_from: date, day_to: date, known_at: datetime | None = None,
         **params: Any) -> Response:
    """The rules whose status, rate or conditions differ between two days, ordered by rule id,
    a page at a time (see the cursor)."""
    return _answer(current_tracker().diff_list(day_from, day_to, known_at, **params))


@blp.route("/timeline", methods=["GET"])
@blp.arguments(TimelineQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.response(200, TimelinePageSchema)
def timeline(day_from: str | None = None, day_to: str | None = None,
             **params: Any) -> Response:
    """Actions as known now (corrections applied, retractions left out), in effective order,
    a page at a time."""
    if day_from:
        params["day_from"] = PolicyDate.parse(day_from).start.isoformat()
    if day_to:
        params["day_to"] = PolicyDate.parse(day_to).end.isoformat()
    items, next_cursor = current_tracker().timeline(**params)
    return _answer({"items": items, "next_cursor": next_cursor})


# Writes --------------------------------------------------------------------------------------


@blp.route("/rules", methods=["POST"])
@write
@blp.arguments(IdempotencyHeaderSchema(), location="headers", error_status_code=400)
@blp.arguments(RuleSchema())
@blp.response(201, RegisteredRuleSchema, description="The rule was registered.")
@blp.alt_response(200, schema=RegisteredRuleSchema, success=True,
                  description="The rule was already registered with these fields; nothing stored.")
@_document_errors(_WRITE_ERRORS)
def register_rule(headers: dict[str, Any], fields: dict[str, Any]) -> Any:
    """Register a rule; 409 if its id is registered with other fields."""
    written = current_tracker().register_rule(fields, request=_request(headers))
    body = {**fields, "position": written.position, "recorded_at": written.recorded_at}
    location = url_for("api.get_rule", rule_id=written.rule_id)
    return body, _status(written), {"Location": location}


@blp.route("/rules/<rule_id>/actions", methods=["POST"], parameters=[RULE_PARAM])
@write
@blp.arguments(IdempotencyHeaderSchema(), location="headers", error_status_code=400)
@blp.arguments(ActionSchema())
@blp.response(201, WrittenSchema, description="The action was recorded.")
@blp.alt_response(200, schema=WrittenSchema, success=True,
                  description="The same action (same id, same fields) was recorded before; "
                              "nothing stored.")
@_document_errors(_WRITE_ERRORS)
def record_action(headers: dict[str, Any], action: dict[str, Any], rule_id: str) -> Any:
    """Record an action on a rule; a client id used with other fields is 409."""
    written = current_tracker().record_action(rule_id, action, request=_request(headers))
    return written.body(), _status(written)


@blp.route("/rules/<rule_id>/actions/<action_id>/corrections", methods=["POST"],
           parameters=[RULE_PARAM, ACTION_PARAM])
@write
@blp.arguments(IdempotencyHeaderSchema(), location="headers", error_status_code=400)
@blp.arguments(CorrectionSchema())
@blp.response(201, WrittenSchema, description="The correction was recorded.")
@_document_errors(_WRITE_ERRORS)
def correct_action(headers: dict[str, Any], body: dict[str, Any], rule_id: str,
                   action_id: str) -> Any:
    """Correct some fields of an action, saying why; the action itself is never edited."""
    changes = {k: v for k, v in body.items() if k != "reason"}
    written = current_tracker().correct_action(rule_id, action_id, changes, body["reason"],
                                       request=_request(headers))
    return written.body(), _status(written)


@blp.route("/rules/<rule_id>/actions/<action_id>/retraction", methods=["POST"],
           parameters=[RULE_PARAM, ACTION_PARAM])
@write
@blp.arguments(IdempotencyHeaderSchema(), location="headers", error_status_code=400)
@blp.arguments(RetractionSchema())
@blp.response(201, WrittenSchema, description="The retraction was recorded.")
@_document_errors(_WRITE_ERRORS)
def retract_action(headers: dict[str, Any], body: dict[str, Any], rule_id: str,
                   action_id: str) -> Any:
    """Withdraw an action recorded in error, saying why; 409 if it was already retracted."""
    written = current_tracker().retract_action(rule_id, action_id, body["reason"], request=_request(headers))
    return written.body(), _status(written)


# The human docs page's assets, served from the installed swagger-ui-bundle package ------------

docs_assets = FlaskBlueprint("api_docs_assets", __name__)


def _swagger_ui_folder() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@docs_assets.route(f"{PREFIX}/docs/assets/<path:filename>")
def docs_asset(filename: str) -> Any:
    return send_from_directory(_swagger_ui_folder(), filename, max_age=86400)
