"""/api/v1/webhooks: register with a write token, see, and remove endpoints."""

from __future__ import annotations

import base64

import pytest

from timeline.tokens import TokenStore

from feed_support import make_app

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def client(private_tracker):
    return make_app(private_tracker).test_client()


@pytest.fixture
def auth(private_token):
    return {"Authorization": f"Bearer {private_token}"}


def test_registering_answers_201_with_an_id_and_a_whsec_secret(client, auth, private_tracker):
    record_head = private_tracker.head()
    response = client.post("/api/v1/webhooks", json={"url": URL}, headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"].startswith("wh_")
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) >= 24
    assert body["url"] == URL and body["types"] == [] and body["after"] == record_head
    assert response.headers["Location"].endswith(f"/api/v1/webhooks/{body['id']}")

    shown = client.get(f"/api/v1/webhooks/{body['id']}", headers=auth).get_json()
    assert shown["id"] == body["id"] and shown["active"] is True
    assert shown["delivered"] == 0 and shown["pending"] is None
    assert "secret" not in shown and body["secret"] not in str(shown)
    listed = client.get("/api/v1/webhooks", headers=auth).get_json()["items"]
    assert [item["id"] for item in listed] == [body["id"]]
    assert body["secret"] not in str(listed)


def test_each_endpoint_gets_its_own_secret(client, auth):
    first = client.post("/api/v1/webhooks", json={"url": URL}, headers=auth).get_json()
    second = client.post("/api/v1/webhooks", json={"url": URL}, headers=auth).get_json()
    assert first["secret"] != second["secret"] and first["id"] != second["id"]


def test_types_choose_which_events_are_sent(client, auth):
    response = client.post("/api/v1/webhooks", headers=auth, json={
        "url": URL, "types": ["timeline.action.recorded", "timeline.action.retracted"],
    })
    assert response.status_code == 201
    assert response.get_json()["types"] == ["timeline.action.recorded", "timeline.action.retracted"]


@pytest.mark.parametrize("body, field", [
    ({}, "url"),
    ({"url": URL, "types": ["rule.created"]}, "types.0"),
    ({"url": URL, "types": []}, "types"),
    ({"url": URL, "types": "timeline.action.recorded"}, "types"),
    ({"url": URL, "secret": "mine"}, "secret"),
    ({"url": 42}, "url"),
])
def test_bad_bodies_are_422_and_store_nothing(client, auth, body, field):
    response = client.post("/api/v1/webhooks", json=body, headers=auth)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert client.get("/api/v1/webhooks", headers=auth).get_json()["items"] == []


def test_writes_and_reads_of_webhooks_need_a_write_token(client, private_settings, auth):
    created = client.post("/api/v1/webhooks", json={"url": URL}, headers=auth).get_json()
    read_only = TokenStore(private_settings).create("reader", can_write=False)
    for method, path in [("post", "/api/v1/webhooks"), ("get", "/api/v1/webhooks"),
                         ("get", f"/api/v1/webhooks/{created['id']}"),
                         ("delete", f"/api/v1/webhooks/{created['id']}")]:
        call = getattr(client, method)
        kwargs = {"json": {"url": URL}} if method == "post" else {}
        missing = call(path, **kwargs)
        assert missing.status_code == 401, (method, path)
        assert missing.mimetype == "application/problem+json"
        assert call(path, headers={"Authorization": "Bearer tl_wrong"}, **kwargs).status_code == 401
        assert call(path, headers={"Authorization": f"Bearer {read_only}"}, **kwargs).status_code == 403
    assert len(client.get("/api/v1/webhooks", headers=auth).get_json()["items"]) == 1


def test_deleting_removes_the_endpoint(client, auth):
    created = client.post("/api/v1/webhooks", json={"url": URL}, headers=auth).get_json()
    assert client.delete(f"/api/v1/webhooks/{created['id']}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/webhooks/{created['id']}", headers=auth).status_code == 404
    again = client.delete(f"/api/v1/webhooks/{created['id']}", headers=auth)
    assert again.status_code == 404 and again.mimetype == "application/problem+json"
    assert client.get("/api/v1/webhooks", headers=auth).get_json()["items"] == []


def test_the_openapi_document_describes_the_feed(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/events", "/api/v1/events/stream", "/api/v1/webhooks", "/api/v1/webhooks/{webhook_id}"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    data = schemas["CloudEvent"]["properties"]["data"]
    assert {ref["$ref"] for ref in data["oneOf"]} == {
        f"#/components/schemas/{name}" for name in
        ("RuleRegisteredData", "ActionRecordedData", "ActionCorrectedData", "ActionRetractedData")
    }
    for name in ("RuleRegisteredData", "ActionRecordedData", "ActionCorrectedData", "ActionRetractedData"):
        assert name in schemas
    assert set(schemas["EventPage"]["properties"]) == {"events", "next_after", "head"}
    parameters = {p["name"] for p in spec["paths"]["/api/v1/events"]["get"]["parameters"]}
    assert parameters == {"after", "limit", "rule", "jurisdiction", "instrument", "type"}
    for path in ("/api/v1/webhooks/{webhook_id}/deliveries", "/api/v1/webhooks/{webhook_id}/replay"):
        assert path in spec["paths"], path
    assert set(schemas["Delivery"]["properties"]) == {
        "event_id", "sequence", "webhook_id", "attempt", "status", "error", "at", "next_try_at"}
    assert {"rules", "jurisdictions", "instruments"} <= set(schemas["WebhookCreate"]["properties"])
    stream = spec["paths"]["/api/v1/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} == {
        "after", "Last-Event-ID", "rule", "jurisdiction", "instrument", "type"}
    post = spec["paths"]["/api/v1/webhooks"]["post"]
    assert post["security"] == [{"bearerAuth": []}]
    assert "webhook-signature" in post["description"]
    assert "secret" in schemas["WebhookCreated"]["properties"]


def test_every_kind_of_feed_event_matches_the_openapi_document(private_tracker):
    """Integrators read the shapes from the document: what the feed sends must fit it."""
    from jsonschema.exceptions import ValidationError
    from openapi_schema_validator import OAS30Validator
    from openapi_spec_validator import validate

    from feed_support import register

    register(private_tracker, "us-documented-rule")
    private_tracker.record_action("us-documented-rule", {
        "id": "fee-1", "kind": "fee", "effective": "2025-03-04", "rate_percent": 25,
        "conditions": ["licence needed"], "summary": "A fee.",
        "sources": [{"title": "Notice", "url": "https://example.org/n", "published": "2025-03"}],
    })
    private_tracker.correct_action("us-documented-rule", "fee-1", {"rate_percent": 20}, "misread")
    private_tracker.retract_action("us-documented-rule", "fee-1", "not enacted")
    client = make_app(private_tracker).test_client()
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    page = client.get("/api/v1/events").get_json()
    assert len({event["type"] for event in page["events"]}) == 4
    OAS30Validator({"$ref": "#/components/schemas/EventPage", "components": spec["components"]}).validate(page)
    # A retraction is not a correction: each event fits exactly one of the data shapes.
    wrong = dict(page["events"][3], data={"id": "x", "action_id": "fee-1"})
    event_schema = {"$ref": "#/components/schemas/CloudEvent", "components": spec["components"]}
    with pytest.raises(ValidationError):
        OAS30Validator(event_schema).validate(wrong)
