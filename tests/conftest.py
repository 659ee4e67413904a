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
