"""Errors a user can cause, by what went wrong; the web layer (``web/errors.py``) and the CLI
each say them their own way."""

from __future__ import annotations


class TimelineError(Exception):
    """Base of every error a user can cause: a request that cannot be answered as asked."""

    def __init__(self, detail: str, errors: dict[str, object] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class InvalidInput(TimelineError):
    """Fields that break the contract's rules; nothing is stored."""


class NotFound(TimelineError):
    """No rule or action with the id given."""


class Conflict(TimelineError):
    """The id exists with other fields, or a concurrent writer got there first."""


class StoreNotEmpty(TimelineError):
    """An import into a store that already holds events."""


class StoreUnavailable(TimelineError):
    """The event store cannot be reached."""
