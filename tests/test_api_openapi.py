"""The OpenAPI document and the human docs page, both served by the app itself."""

from __future__ import annotations

import re

CONTRACT_OPERATIONS = {
    ("get", "/api/v1/rules"),
    ("get", "/api/v1/rules/{rule_id}"),
    ("get", "/api/v1/rules/{rule_id}/history"),
    ("get", "/api/v1/diff"),
    ("get", "/api/v1/timeline"),
    ("post", "/api/v1/rules"),
    ("post", "/api/v1/rules/{rule_id}/actions"),
    ("post", "/api/v1/rules/{rule_id}/actions/{action_id}/corrections"),
    ("post", "/api/v1/rules/{rule_id}/actions/{action_id}/retraction"),
}


def _operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(method, path): op for path, item in doc["paths"].items()
            for method, op in item.items() if method in {"get", "post", "put", "patch", "delete"}}


def _resolve(doc: dict, ref_or_obj: dict) -> dict:
    while "$ref" in ref_or_obj:
        node = doc
        for part in ref_or_obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        ref_or_obj = node
    return ref_or_obj


def test_the_document_describes_every_operation(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert CONTRACT_OPERATIONS <= set(_operations(doc))


def test_query_parameters_are_documented(client):
    ops = _operations(client.get("/api/v1/openapi.json").get_json())

    def names(method: str, path: str) -> set[str]:
        return {p["name"] for p in ops[(method, path)].get("parameters", []) if p["in"] == "query"}

    assert names("get", "/api/v1/rules") == {"jurisdiction", "instrument", "q", "as_of", "known_at",
                                             "limit", "cursor"}
    assert names("get", "/api/v1/rules/{rule_id}") == {"as_of", "known_at"}
    assert names("get", "/api/v1/rules/{rule_id}/history") == {"known_at"}
    assert names("get", "/api/v1/diff") >= {"from", "to", "known_at", "jurisdiction", "instrument",
                                            "limit", "cursor"}
    assert names("get", "/api/v1/timeline") >= {"from", "to", "jurisdiction", "instrument", "rule",
                                                 "q", "limit", "cursor"}


def test_writes_need_a_bearer_token_and_take_an_idempotency_key(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A token from `timeline token create NAME`."}
    for (method, path), op in _operations(doc).items():
        if path.startswith("/api/v1/webhooks"):
            # Webhook endpoints hold receivers' URLs: every operation on them needs a token.
            assert op["security"] == [{"bearerAuth": []}], path
        elif method == "post":
            assert op["security"] == [{"bearerAuth": []}], path
            headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            assert "Idempotency-Key" in headers, path
            assert {"201", "401", "403", "413", "415", "422"} <= set(op["responses"]), path
        else:
            assert "security" not in op, path


def test_every_error_response_is_problem_json(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "errors"}
    for (method, path), op in _operations(doc).items():
        for status, response in op["responses"].items():
            content = _resolve(doc, response).get("content", {})
            if status == "default" or int(status) >= 400:
                assert list(content) == ["application/problem+json"], (method, path, status)
            elif status in ("204", "304"):
                assert content == {}, (method, path, status)  # these carry no body
            elif path == "/api/v1/events/stream":
                assert list(content) == ["text/event-stream"], (method, path, status)
            elif path in ("/api/v1/spells", "/api/v1/panel"):  # research downloads
                assert list(content) == ["text/csv", "application/x-ndjson"], (method, path)
            elif path == "/metrics":
                assert list(content) == ["text/plain"], (method, path, status)  # Prometheus text
            else:
                assert list(content) == ["application/json"], (method, path, status)


def test_bodies_reject_unknown_fields_in_the_document_too(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    for name in ("Rule", "Action", "Correction", "Retraction", "Source", "Link"):
        assert schemas[name]["additionalProperties"] is False, name


def test_the_docs_page_is_served_without_outside_requests(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(url.startswith("/api/v1/docs/assets/") for url in assets)
    assert "http://" not in html and "https://" not in html
    assert '"validatorUrl": null' in html  # Swagger UI would call an outside validator otherwise
    assert '"/api/v1/openapi.json"' in html
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.data) > 1000, url


def _inline(doc: dict, node: object) -> object:
    """``node`` with every ``$ref`` replaced by what it names (the output schemas nest, never
    recursively)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(doc, _resolve(doc, node))
        return {key: _inline(doc, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(doc, value) for value in node]
    return node


def _check_answer(doc: dict, method: str, path: str, response) -> None:
    """The answer's content type and body are those the document gives for its status."""
    from openapi_schema_validator import OAS30Validator, validate

    op = _operations(doc)[(method, path)]
    described = _resolve(doc, op["responses"][str(response.status_code)])
    (content_type, media), = described["content"].items()
    assert response.mimetype == content_type, (path, response.status_code)
    validate(response.get_json(), _inline(doc, media["schema"]), cls=OAS30Validator)


def test_real_answers_match_the_document(loaded, app):
    """Answers are built without the output schemas: each must still be what the document says."""
    client = app.test_client()
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.0")
    h200 = "us-h200-export-licensing-cn"
    rules = "/api/v1/rules"
    first = client.get(f"{rules}?as_of=2025-12-09&limit=4")
    assert first.get_json()["next_cursor"]
    last = client.get(f"{rules}?limit=1000&cursor={first.get_json()['next_cursor']}")
    assert last.get_json()["next_cursor"] is None
    answers = [
        (rules, first), (rules, last),
        (rules, client.get(f"{rules}?as_of=2025-12-09&q=rare+earth")),
        (rules + "/{rule_id}", client.get(f"{rules}/{h200}?as_of=2025-12-09")),  # with a rate
        (rules + "/{rule_id}",  # paused, until a year
         client.get(f"{rules}/cn-rare-earth-export-restrictions?as_of=2025-12-09")),
        (rules + "/{rule_id}", client.get(f"{rules}/{h200}?as_of=2025-06-01")),  # uncertain
        (rules + "/{rule_id}", client.get(f"{rules}/no-such-rule")),  # 404 problem
        (rules + "/{rule_id}/history", client.get(f"{rules}/{h200}/history")),
        (rules + "/{rule_id}/history", client.get(f"{rules}/no-such-rule/history")),
        ("/api/v1/diff", client.get("/api/v1/diff?from=2020-01-01&to=2025-12-09&limit=2")),
        ("/api/v1/diff", client.get("/api/v1/diff?from=2025-12-07&to=2025-12-09")),
        ("/api/v1/diff", client.get("/api/v1/diff?from=2025-12-07&to=2025-12-09&cursor=bad")),
        ("/api/v1/timeline", client.get("/api/v1/timeline?limit=3")),
    ]
    statuses = {response.status_code for _, response in answers}
    assert statuses == {200, 400, 404}
    for path, response in answers:
        _check_answer(doc, "get", path, response)


def test_real_answers_are_what_the_output_schemas_would_dump(loaded, app):
    """The read model's answers are the contract's shape already: dumping them through the
    output schemas (as the API once did) changes nothing."""
    from timeline.schemas import (DiffSchema, HistorySchema, StateListSchema, StateSchema,
                                  TimelinePageSchema)

    client = app.test_client()
    h200 = "us-h200-export-licensing-cn"
    for url, schema in (
        ("/api/v1/rules?as_of=2025-12-09", StateListSchema()),
        ("/api/v1/rules?as_of=2025-12-09&limit=3", StateListSchema()),
        (f"/api/v1/rules/{h200}?as_of=2025-12-09", StateSchema()),
        ("/api/v1/rules/cn-rare-earth-export-restrictions?as_of=2025-12-09", StateSchema()),
        (f"/api/v1/rules/{h200}/history", HistorySchema()),
        ("/api/v1/diff?from=2020-01-01&to=2025-12-09", DiffSchema()),
        ("/api/v1/timeline?limit=50", TimelinePageSchema()),
    ):
        body = client.get(url).get_json()
        assert schema.dump(body if "from" not in body else
                           {**body, "day_from": body["from"], "day_to": body["to"]}) == body, url
