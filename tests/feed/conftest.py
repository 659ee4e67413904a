"""Fixtures for the integrator feed tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from feed_support import LiveServer, Receiver, make_app
from timeline.config import Settings
from timeline.service import Tracker
from timeline.tokens import TokenStore


@pytest.fixture
def private_settings(tmp_path: Path) -> Settings:
    """A store whose webhooks may go to 127.0.0.1 (where the test receivers listen)."""
    return Settings(home=tmp_path / "home", webhook_allow_private=True)


@pytest.fixture
def private_tracker(private_settings: Settings) -> Iterator[Tracker]:
    t = Tracker(private_settings)
    yield t
    t.close()


@pytest.fixture
def app(tracker: Tracker):
    return make_app(tracker)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(settings: Settings) -> str:
    return TokenStore(settings).create("feed-tests")


@pytest.fixture
def private_token(private_settings: Settings) -> str:
    return TokenStore(private_settings).create("feed-tests")


@pytest.fixture
def live_server_factory() -> Iterator[Callable[[Any], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    receivers: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.stop()
