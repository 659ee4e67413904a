"""/healthz, /readyz and /metrics, as an operator's probes and Prometheus see them."""

from __future__ import annotations

import time

import pytest

from timeline.feed.webhooks import WebhookStore
from timeline.web import create_app

from tests.feed.feed_support import deliver_until_idle

H200 = "us-h200-export-licensing-cn"


def PUBLIC(*address: object) -> list[str]:  # noqa: N802 - a resolver that finds a public address
    return ["93.184.216.34"]


@pytest.fixture
def client(loaded):
    return create_app({"TESTING": True}, tracker=loaded).test_client()


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric: the label text (or "") -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            found[key[len(name):]] = float(value)
    return found


def test_healthz_answers_while_the_process_does(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}


def test_readyz_is_200_when_caught_up_and_says_where(client, loaded):
    answer = client.get("/readyz")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ready" and body["lag"] == 0
    assert body["head"] == body["readmodel_position"] == loaded.app.head()


def test_readyz_is_503_with_the_reason_when_the_store_does_not_answer(client, loaded, monkeypatch):
    def unreachable() -> int:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(loaded.app, "head", unreachable)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.mimetype == "application/problem+json"
    problem = answer.get_json()
    assert "event store does not answer" in problem["detail"] and "event_store" in problem["errors"]


def test_readyz_is_503_while_the_read_models_lag(client, loaded, monkeypatch):
    head = loaded.app.head()
    monkeypatch.setattr(loaded, "catch_up", lambda *args, **kwargs: 0)  # a projection that is stuck
    monkeypatch.setattr(loaded.app, "head", lambda: head + 500)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["errors"] == {"read_models": "500 events behind"}


def test_metrics_count_requests_by_route_and_status_with_latencies(client):
    before = samples(client.get("/metrics").get_data(as_text=True), "timeline_http_requests_total")
    for _ in range(3):
        assert client.get(f"/api/v1/rules/{H200}").status_code == 200
    assert client.get("/api/v1/rules/no-such-rule").status_code == 404
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    text = answer.get_data(as_text=True)
    after = samples(text, "timeline_http_requests_total")
    route = '{method="GET",route="/api/v1/rules/<rule_id>",status="%s"}'
    assert after[route % "200"] - before.get(route % "200", 0) == 3
    assert after[route % "404"] - before.get(route % "404", 0) == 1
    assert not any("no-such-rule" in labels for labels in after)  # the route, not the raw path
    buckets = samples(text, "timeline_http_request_duration_seconds_bucket")
    assert any('route="/api/v1/rules/<rule_id>"' in labels and 'le="+Inf"' in labels
               for labels in buckets)
    assert "timeline_sse_subscribers" in text


def test_metrics_show_the_read_model_lag_and_each_webhooks_backlog(client, loaded, monkeypatch):
    head = loaded.app.head()
    store = WebhookStore(loaded.settings)
    endpoint, _ = store.register("https://example.org/hook", None, head - 4,
                                 resolver=PUBLIC)
    text = client.get("/metrics").get_data(as_text=True)
    assert samples(text, "timeline_webhook_backlog_events") == {f'{{webhook="{endpoint.id}"}}': 4.0}
    assert samples(text, "timeline_readmodel_lag_events") == {"": 0.0}
    assert samples(text, "timeline_event_store_head") == {"": float(head)}

    monkeypatch.setattr(loaded.app, "head", lambda: head + 7)
    text = client.get("/metrics").get_data(as_text=True)
    assert samples(text, "timeline_readmodel_lag_events") == {"": 7.0}
    assert samples(text, "timeline_webhook_backlog_events") == {f'{{webhook="{endpoint.id}"}}': 11.0}


def test_the_backlog_leaves_out_disabled_endpoints(loaded):
    """An endpoint that answered 410 is disabled and has no backlog; one that keeps failing
    keeps every event it has not had."""
    from timeline.feed.delivery import DeliveryWorker, Result

    store = WebhookStore(loaded.settings)
    head = loaded.app.head()
    kept, _ = store.register("https://example.org/a", None, head - 2, resolver=PUBLIC)
    gone, _ = store.register("https://example.org/b", None, head - 2, resolver=PUBLIC)

    class Answers:
        def send(self, url: str, body: bytes, headers: dict[str, str]) -> Result:
            return Result(410) if url.endswith("/b") else Result(500, "HTTP 500")

    now = time.time()
    deliver_until_idle(DeliveryWorker(loaded, sender=Answers(), now=lambda: now))
    assert not store.get(gone.id).active
    assert store.backlog(head) == {kept.id: 2}