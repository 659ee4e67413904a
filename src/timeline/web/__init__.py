"""The web layer: the app factory, the API and the pages. Thin: it calls the tracker."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app
from flask_smorest import Api

from timeline.config import load_settings
from timeline.service import Tracker
from timeline.web import errors

MAX_BODY = 1024 * 1024


class TimelineApi(Api):
    """flask-smorest's Api, with the project's one error shape instead of its own."""

    def _register_error_handlers(self) -> None:
        errors.init_app(self._app)


def create_app(test_config: dict[str, Any] | None = None, tracker: Tracker | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        API_TITLE="timeline",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=MAX_BODY,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    if tracker is None:
        tracker = Tracker(app.config.get("TIMELINE_SETTINGS") or load_settings())
    app.extensions["timeline"] = tracker
    app.json.sort_keys = False

    api = TimelineApi(app)
    app.extensions["timeline_api"] = api

    from timeline.web import feed_api

    feed_api.init_app(app)
    return app


def current_tracker() -> Tracker:
    return current_app.extensions["timeline"]
