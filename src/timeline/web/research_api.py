"""Research downloads at /api/v1: spells and balanced panels, streamed as CSV or JSON Lines.

Every question is checked, and the instant settled, before the first byte is sent: bad input
is a 400 problem+json, never a broken download.
"""

from __future__ import annotations

from datetime import date, datetime
from http import HTTPStatus
from typing import Any, Iterator

from flask import Flask, Response, current_app
from flask_smorest import Blueprint

from timeline import research
from timeline.readmodel.research import PANEL_COLUMNS, SPELL_COLUMNS
from timeline.schemas import PanelQuerySchema, SpellsQuerySchema
from timeline.service import PANEL_MAX_ROWS
from timeline.web import current_tracker

blp = Blueprint(
    "research", __name__, url_prefix="/api/v1",
    description="Research downloads: every rule's spells, or a balanced rule x period panel, "
                "as known at one instant (echoed in every row: asking again with it gives the "
                "same bytes), as CSV or JSON Lines.",
)


def _content(columns: tuple[str, ...], what: str) -> dict[str, Any]:
    """The 200 response of a download, in both of its media types."""
    names = ", ".join(columns)
    return {
        "description": f"{what}. Columns: {names}.",
        "content": {
            "text/csv": {"schema": {"type": "string", "description": (
                "A header line, then one row per line (RFC 4180); a list is a JSON array, a "
                "cell a spreadsheet would run as a formula starts with an apostrophe.")}},
            "application/x-ndjson": {"schema": {"type": "string", "description": (
                "One JSON object per line, keys as the columns.")}},
        },
    }


def _stream(rows: Iterator[dict[str, Any]], columns: tuple[str, ...], fmt: str, name: str,
            known_at: str) -> Response:
    filename = f"timeline-{name}-{known_at.replace(':', '')}.{research.SUFFIXES[fmt]}"
    response = Response(research.chunks(rows, columns, fmt),
                        mimetype=research.MEDIA_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@blp.route("/spells", methods=["GET"])
@blp.arguments(SpellsQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.doc(responses={"200": _content(SPELL_COLUMNS, "Spells, ordered by rule id, then valid_from")})
@blp.alt_response(400, response=HTTPStatus.BAD_REQUEST.name)
def spells(fmt: str, known_at: datetime | None = None, **filters: Any) -> Response:
    """Every rule's spells: one row per rule per stretch of valid time in which its state holds
    (valid_to is the first day after, empty while open), as known at an instant."""
    at, rows = current_tracker().spells(known_at, **filters)
    return _stream(rows, SPELL_COLUMNS, fmt, "spells", at)


@blp.route("/panel", methods=["GET"])
@blp.arguments(PanelQuerySchema(), location="query", error_status_code=400, unknown="raise",
               as_kwargs=True)
@blp.doc(responses={"200": _content(PANEL_COLUMNS, "The panel, ordered by rule id, then period")})
@blp.alt_response(400, response=HTTPStatus.BAD_REQUEST.name)
def panel(day_from: date, day_to: date, every: str, fmt: str,
          known_at: datetime | None = None, **filters: Any) -> Response:
    """A balanced panel: every rule registered at the instant, for every calendar period
    between from and to (the first and last cut to them), in the state of the period's last
    day (period); changed says whether status, rate or conditions differ from the rule's row
    for the previous period (false on the first). More than 50 million rows is refused: filter or widen the periods."""
    # A deployment (or a test) may set a lower limit than the contract's 50 million rows.
    max_rows = current_app.config.get("TIMELINE_PANEL_MAX_ROWS", PANEL_MAX_ROWS)
    at, rows = current_tracker().panel(day_from, day_to, every, known_at, max_rows=max_rows, **filters)
    return _stream(rows, PANEL_COLUMNS, fmt, f"panel-{every}", at)


def init_app(app: Flask) -> None:
    app.extensions["timeline_api"].register_blueprint(blp)
