"""Shared test fixtures: a tracker on a fresh store, the Flask app, its client and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from timeline.config import Settings
from timeline.service import Tracker

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def tracker(settings: Settings):
    t = Tracker(settings)
    yield t
    t.close()


@pytest.fixture
def loaded(tracker: Tracker) -> Tracker:
    """A tracker with the bundled fixtures loaded."""
    from timeline.fixtures import bundled_fixtures, load_fixtures

    load_fixtures(tracker, bundled_fixtures())
    return tracker


@pytest.fixture
def runner(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TIMELINE_HOME", str(settings.home))
    monkeypatch.delenv("TIMELINE_DATABASE_URL", raising=False)
    return CliRunner()


@pytest.fixture
def app(tracker: Tracker):
    """The Flask app on the test's tracker."""
    from timeline.web import create_app

    return create_app({"TESTING": True}, tracker=tracker)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def write_token(settings: Settings) -> str:
    from timeline.tokens import TokenStore

    return TokenStore(settings).create("tests")


@pytest.fixture
def auth(write_token: str) -> dict[str, str]:
    """Headers that let a request write."""
    return {"Authorization": f"Bearer {write_token}"}
