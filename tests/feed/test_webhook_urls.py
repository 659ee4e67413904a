"""Webhook URLs that could reach internal services are refused before any connection is tried.

These tests never connect anywhere: refusals happen before a socket is opened (asserted by
making every connection attempt fail the test), and names are resolved by stubs.
"""

from __future__ import annotations

import socket

import pytest

from timeline.feed.delivery import DeliveryWorker, HttpSender
from timeline.feed.urlsafety import RefusedURL, check_url, is_public
from timeline.feed.webhooks import WebhookStore

from feed_support import deliver_until_idle, make_app, record, register

REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/hook",
    "http://10.0.0.1/hook",
    "http://10.255.255.254/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.20/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::1]:9000/",
    "http://[fd12:3456:789a::1]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:10.1.2.3]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://2130706433/",  # 127.0.0.1 written as one number
    "http://0x7f.1/",  # 127.0.0.1 in hex shorthand
    "https://127.0.0.1/",
]
BAD_SCHEMES = [
    "file:///etc/passwd",
    "ftp://example.org/hook",
    "gopher://example.org/",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "ws://example.org/hook",
    "example.org/hook",
    "//example.org/hook",
    "http:///no-host",
    "http://user:secret@example.org/hook",
    "",
]


@pytest.fixture
def no_connections(monkeypatch):
    """Fail the test on any attempt to open a connection."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"a connection to {address} was tried")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def public_resolver(host: str, port: int) -> list[str]:
    return {"hooks.example.org": ["93.184.216.34"]}.get(host, [])


@pytest.mark.parametrize("url", REFUSED)
def test_internal_addresses_are_refused(url, no_connections):
    with pytest.raises(RefusedURL) as refused:
        check_url(url)
    assert "url" in refused.value.errors
    assert "TIMELINE_WEBHOOK_ALLOW_PRIVATE" in refused.value.detail
    assert no_connections == []


@pytest.mark.parametrize("url", BAD_SCHEMES)
def test_other_schemes_and_malformed_urls_are_refused(url, no_connections):
    with pytest.raises(RefusedURL):
        check_url(url, resolver=public_resolver)
    assert no_connections == []


def test_a_name_is_judged_by_every_address_it_resolves_to(no_connections):
    assert check_url("https://hooks.example.org/in", resolver=public_resolver).addresses == ("93.184.216.34",)
    mixed = lambda host, port: ["93.184.216.34", "10.0.0.8"]  # noqa: E731
    with pytest.raises(RefusedURL):
        check_url("https://hooks.example.org/in", resolver=mixed)
    with pytest.raises(RefusedURL, match="does not resolve"):
        check_url("https://nowhere.example.org/", resolver=public_resolver)
    assert no_connections == []


def test_public_addresses_pass():
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert is_public(address)


def test_private_addresses_are_allowed_when_the_setting_says_so(no_connections):
    target = check_url("http://127.0.0.1:8123/hook?x=1", allow_private=True)
    assert (target.host, target.port, target.path) == ("127.0.0.1", 8123, "/hook?x=1")
    assert check_url("http://[::1]/", allow_private=True).host_header == "[::1]"
    with pytest.raises(RefusedURL):
        check_url("file:///etc/passwd", allow_private=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://[::1]/", "http://10.1.1.1/",
                                 "http://169.254.169.254/", "file:///etc/passwd"])
def test_the_api_refuses_them_with_422_and_stores_nothing(app, token, settings, url, no_connections):
    client = app.test_client()
    response = client.post("/api/v1/webhooks", json={"url": url},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "url" in response.get_json()["errors"]
    assert WebhookStore(settings).list() == []
    assert no_connections == []


def test_the_api_accepts_private_addresses_with_the_setting(private_tracker, private_token):
    client = make_app(private_tracker).test_client()
    response = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"},
                           headers={"Authorization": f"Bearer {private_token}"})
    assert response.status_code == 201


def test_a_name_re_pointed_at_a_private_address_is_refused_at_delivery(tracker, token, no_connections):
    """DNS rebinding: the name was public when registered and private when delivering."""
    register(tracker, "us-rebind-rule")
    app = make_app(tracker, TIMELINE_WEBHOOK_RESOLVER=public_resolver)
    created = app.test_client().post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.org/in"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201
    record(tracker, "us-rebind-rule", 1)

    rebound = lambda host, port: ["10.0.0.7"]  # noqa: E731
    now = [1_000_000.0]
    worker = DeliveryWorker(tracker, sender=HttpSender(resolver=rebound), now=lambda: now[0])
    assert deliver_until_idle(worker) == 1
    endpoint = worker.store.get(created.get_json()["id"])
    assert endpoint.pending.attempts == 1 and endpoint.pending.position == tracker.head()
    assert endpoint.last_status is None
    assert "refused" in endpoint.last_error and "10.0.0.7" in endpoint.last_error
    assert endpoint.delivered_count == 0
    assert no_connections == []
