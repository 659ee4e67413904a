"""The web layer: the app factory, the API and the pages. Thin: it calls the tracker."""

from __future__ import annotations

import http
from typing import Any

from flask import Flask, current_app
from flask_smorest import Api
from flask_smorest.utils import prepare_response

from timeline.config import load_settings
from timeline.service import Tracker
from timeline.web import errors

MAX_BODY = 1024 * 1024
PROBLEM_JSON = "application/problem+json"

API_DESCRIPTION = """\
timeline tracks trade and technology policy as immutable events. Every state answers what was
in force on `as_of` (a day) as the tracker knew it at `known_at` (an RFC 3339 instant), and
echoes both, so the same question can be asked again verbatim and gets the same answer.

Reads are public. Writes need `Authorization: Bearer <token>` (make one with
`timeline token create NAME`). A write may carry an `Idempotency-Key`: a repeat with the same
body answers the first status and body and stores nothing.

Every error is RFC 9457 `application/problem+json` with `type`, `title`, `status`, `detail` and
`errors` (messages by field). A bad query string is 400; bad body fields are 422.
"""


class TimelineApi(Api):
    """flask-smorest's Api, with the project's one error shape instead of its own."""

    from timeline.schemas import ProblemSchema as ERROR_SCHEMA  # noqa: N811 - flask-smorest's name

    def _register_error_handlers(self) -> None:
        errors.init_app(self._app)

    def _register_responses(self) -> None:
        """Document every error response as problem+json, the shape errors.py sends."""
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "An error, as problem+json", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_JSON)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, default, lazy=True)


def create_app(test_config: dict[str, Any] | None = None, tracker: Tracker | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        API_TITLE="timeline",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        # The human docs page: Swagger UI from the swagger-ui-bundle package, served by this app.
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/api/v1/docs/assets/",
        # Swagger UI would otherwise send the document to an outside validator.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        API_SPEC_OPTIONS={"info": {"description": API_DESCRIPTION}},
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
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer",
                       "description": "A token from `timeline token create NAME`."}
    )

    from timeline.web.api import blp as api_blueprint
    from timeline.web.api import docs_assets

    api.register_blueprint(api_blueprint)
    app.register_blueprint(docs_assets)

    from timeline.web import pages

    pages.init_app(app)

    from timeline.web import feed_api

    feed_api.init_app(app)

    from timeline.web.data_page import bp as data_page

    app.register_blueprint(data_page)

    from timeline.web import research_api

    research_api.init_app(app)

    from timeline.web import ops

    ops.init_app(app)
    return app


def current_tracker() -> Tracker:
    """The tracker of the app handling this request."""
    return current_app.extensions["timeline"]
