"""Errors the domain and the application raise; the web and CLI layers map them in one place each."""

from __future__ import annotations


class TimelineError(Exception):
    """Base of every error a user can cause."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, errors: dict[str, object] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class InvalidInput(TimelineError):
    """Fields that break the contract's rules; nothing is stored."""

    status = 422
    title = "Invalid input"


class NotFound(TimelineError):
    status = 404
    title = "Not found"


class Conflict(TimelineError):
    """The id exists with other fields, or a concurrent writer got there first."""

    status = 409
    title = "Conflict"


class StoreNotEmpty(TimelineError):
    status = 409
    title = "Store not empty"


class StoreUnavailable(TimelineError):
    """The event store cannot be reached."""

    status = 503
    title = "Store unavailable"
