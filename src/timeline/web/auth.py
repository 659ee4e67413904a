"""Bearer tokens for writes: 401 without a valid one, 403 for a token that may not write."""

from __future__ import annotations

import functools
from typing import Any, Callable

from flask import current_app, request

from timeline.tokens import Token, TokenStore
from timeline.web import current_tracker
from timeline.web.errors import problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="timeline"'}


def token_store() -> TokenStore:
    store = current_app.extensions.get("timeline_tokens")
    if store is None:
        tracker = current_tracker()
        store = TokenStore(tracker.settings)
        tracker.on_close(store.close)
        current_app.extensions["timeline_tokens"] = store
    return store


def require_write(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return problem(401, "Unauthorized", "Writes need an Authorization: Bearer <token> header.",
                           headers=_CHALLENGE)
        token: Token | None = token_store().check(value.strip())
        if token is None:
            return problem(401, "Unauthorized", "The token is not valid.", headers=_CHALLENGE)
        if not token.can_write:
            return problem(403, "Forbidden", f"The token {token.name!r} may not write.")
        return view(*args, **kwargs)

    return wrapper
