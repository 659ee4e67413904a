"""Shared test fixtures: a tracker on a fresh store, the Flask app, its client and a CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner

from tests.pg import drop_schema, postgres_settings
from timeline.config import Settings
from timeline.service import Tracker

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A fresh store: the embedded SQLite file, then PostgreSQL in a schema of its own.

    The PostgreSQL run of every test is in the slow tier: it asks the same of a second store,
    and a schema made and dropped per test costs more than most tests themselves."""
    if request.param == "sqlite":
        yield Settings(home=tmp_path / "home")
    else:
        yield from postgres_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def loaded_sqlite_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store with the bundled fixtures loaded, made once: the tests that want them
    start from a copy of its files rather than loading them again."""
    from timeline.fixtures import bundled_fixtures, load_fixtures

    home = tmp_path_factory.mktemp("loaded") / "home"
    t = Tracker(Settings(home=home))
    load_fixtures(t, bundled_fixtures())
    t.close()
    return home


@pytest.fixture
def tracker(settings: Settings, request: pytest.FixtureRequest):
    if "loaded" in request.fixturenames and not settings.on_postgres:
        shutil.copytree(request.getfixturevalue("loaded_sqlite_home"), settings.home)
    t = Tracker(settings)
    yield t
    t.close()


@pytest.fixture
def loaded(tracker: Tracker) -> Tracker:
    """A tracker with the bundled fixtures loaded (on SQLite, copied in by ``tracker``)."""
    from timeline.fixtures import bundled_fixtures, load_fixtures

    if tracker.settings.on_postgres:
        load_fixtures(tracker, bundled_fixtures())
    return tracker


@pytest.fixture
def runner(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TIMELINE_HOME", str(settings.home))
    if settings.database_url:
        monkeypatch.setenv("TIMELINE_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("TIMELINE_DATABASE_URL", raising=False)
    return CliRunner()


@pytest.fixture
def use_empty_store(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Point the CLI at a new, empty store of the same kind as ``settings``."""
    schemas: list[str] = []

    def switch(home: Path) -> None:
        monkeypatch.setenv("TIMELINE_HOME", str(home))
        if settings.on_postgres:
            schema = f"{settings.postgres_schema}_{len(schemas) + 1}"
            schemas.append(schema)
            base = settings.database_url.split("?", 1)[0]
            monkeypatch.setenv("TIMELINE_DATABASE_URL", f"{base}?schema={schema}")

    yield switch
    for schema in schemas:
        drop_schema(schema)


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
