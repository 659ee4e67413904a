"""One error shape: RFC 9457 problem+json under /api/, a readable HTML page elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from timeline.domain.errors import (
    Conflict, InvalidInput, NotFound, StoreNotEmpty, StoreUnavailable, TimelineError,
)

PROBLEM_TYPES = "/problems/"  # relative URIs, resolved against the server
log = logging.getLogger("timeline.web")


def wants_problem() -> bool:
    """API paths answer in problem+json; the pages answer in HTML."""
    return request.path.startswith("/api/")


def problem(
    status: int,
    title: str,
    detail: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    slug: str | None = None,
) -> Response:
    body = {
        "type": PROBLEM_TYPES + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or {},
    }
    response = current_app.response_class(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten(messages: Any) -> dict[str, str]:
    from timeline.schemas import errors_by_field

    flat: dict[str, str] = {}
    if isinstance(messages, dict):
        # webargs nests messages by location: {"json": {...}, "query": {...}}
        for location, inner in messages.items():
            if location in ("json", "query", "headers", "form", "files", "view_args") and isinstance(inner, dict):
                flat.update(errors_by_field(inner))
            else:
                flat.update(errors_by_field({location: inner}))
    return flat


def html_error(status: int, title: str, detail: str) -> Response:
    body = render_template("error.html", status=status, title=title, detail=detail)
    return current_app.response_class(body, status=status, mimetype="text/html")


def _title(error: HTTPException) -> str:
    """Sentence case, like the domain's errors, so one problem type always has one title."""
    name = error.name or "Error"
    return name[:1] + name[1:].lower()


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages") or data.get("errors") or {}
    title, slug = _title(error), None
    if status == 400 and isinstance(messages, dict) and "json" in messages \
            and not isinstance(messages["json"], dict):
        # webargs could not parse the body at all
        errors: dict[str, str] = {"body": "is not valid JSON"}
        detail = data.get("message") or "The request body is not valid JSON."
    else:
        errors = _flatten(messages)
        detail = data.get("message") or error.description or error.name
    if status == 400 and errors and "body" not in errors:
        detail = "Some parameters are not valid: " + _summary(errors)
    if status == 422 and errors:
        # The same problem type as the domain's InvalidInput: fields that break the rules.
        title, slug = "Invalid input", "invalid-input"
        detail = "Some fields are not valid: " + _summary(errors)
    if status == 413:
        detail = "The request body is larger than 1 MiB."
    if status == 404 and not data:
        detail = f"Nothing is at {request.path}."
    headers = dict(data.get("headers") or {})
    if status == 405 and error.get_response().headers.get("Allow"):
        headers["Allow"] = error.get_response().headers["Allow"]
        detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}."
    if status >= 500:
        log.exception("server error", exc_info=error)
        detail = "The server failed to answer; the error has been logged."
    if wants_problem():
        return problem(status, title, detail, errors, headers, slug)
    return html_error(status, title, detail)


def _summary(errors: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:5])


# The status and problem title of each error a user can cause; any other is a bad request.
STATUS_AND_TITLE: dict[type[TimelineError], tuple[int, str]] = {
    InvalidInput: (422, "Invalid input"),
    NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    StoreNotEmpty: (409, "Store not empty"),
    StoreUnavailable: (503, "Store unavailable"),
}


def handle_timeline_error(error: TimelineError) -> Response:
    status, title = next((said for cls, said in STATUS_AND_TITLE.items()
                          if isinstance(error, cls)), (400, "Bad request"))
    if wants_problem():
        return problem(status, title, error.detail, error.errors)
    return html_error(status, title, error.detail)


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError())


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(TimelineError, handle_timeline_error)
    app.register_error_handler(Exception, handle_unexpected)
