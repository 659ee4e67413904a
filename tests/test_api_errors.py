"""Every error under /api/ has one shape: RFC 9457 problem+json with errors by field."""

from __future__ import annotations

import pytest

from timeline.schemas import ProblemSchema

H200 = "us-h200-export-licensing-cn"
ACTIONS = f"/api/v1/rules/{H200}/actions"
GOOD_ACTION = {"kind": "ban", "effective": "2026-01-05", "sources": [{"title": "Notice"}]}


@pytest.fixture
def reader_token(settings) -> str:
    from timeline.tokens import TokenStore

    return TokenStore(settings).create("reader", can_write=False)


def _cases(auth: dict, reader: dict) -> list[tuple[str, int, dict, str | None]]:
    """(name, expected status, request kwargs, field expected in errors)."""
    json_auth = {**auth, "Content-Type": "application/json"}
    return [
        ("unknown path", 404, {"method": "GET", "path": "/api/v1/nothing-here"}, None),
        ("unknown rule", 404, {"method": "GET", "path": "/api/v1/rules/no-such-rule"}, None),
        ("unknown action", 404, {"method": "POST", "path": f"{ACTIONS}/nope/retraction",
                                 "json": {"reason": "r"}, "headers": auth}, None),
        ("method not allowed", 405, {"method": "DELETE", "path": f"/api/v1/rules/{H200}"}, None),
        ("body over 1 MiB", 413, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                                  "data": b'{"summary": "' + b"x" * (1024 * 1024) + b'"}'}, None),
        ("not JSON", 415, {"method": "POST", "path": ACTIONS, "headers": auth,
                           "data": "kind=ban", "content_type": "application/x-www-form-urlencoded"},
         "Content-Type"),
        ("no content type", 415, {"method": "POST", "path": ACTIONS, "headers": auth,
                                  "data": b'{"kind": "ban"}'}, "Content-Type"),
        ("malformed JSON", 400, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                                 "data": '{"kind": "ban",'}, "body"),
        ("not UTF-8", 400, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                            "data": b'{"kind": "\xff"}'}, "body"),
        ("nested too deeply", 400, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                                    "data": "[" * 100_000 + "]" * 100_000}, "body"),
        ("unpaired surrogate", 400, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                                     "data": '{"kind": "ban", "summary": "\\ud800"}'}, "body"),
        ("NaN", 422, {"method": "POST", "path": ACTIONS, "headers": json_auth,
                      "data": '{"kind": "fee", "effective": "2026", "rate_percent": NaN, '
                              '"sources": [{"title": "t"}]}'}, "rate_percent"),
        ("bad as_of", 400, {"method": "GET", "path": "/api/v1/rules?as_of=2025-02-30"}, "as_of"),
        ("as_of not a day", 400, {"method": "GET", "path": "/api/v1/rules?as_of=2025-12"}, "as_of"),
        ("bad known_at", 400, {"method": "GET", "path": f"/api/v1/rules/{H200}?known_at=2025-12-09"},
         "known_at"),
        ("unknown query parameter", 400, {"method": "GET", "path": "/api/v1/rules?asof=2025-12-09"},
         "asof"),
        ("bad limit", 400, {"method": "GET", "path": "/api/v1/timeline?limit=-1"}, "limit"),
        ("bad cursor", 400, {"method": "GET", "path": "/api/v1/timeline?cursor=abc"}, "cursor"),
        ("bad jurisdiction", 400, {"method": "GET", "path": "/api/v1/rules?jurisdiction=XX"},
         "jurisdiction"),
        ("invalid field", 422, {"method": "POST", "path": ACTIONS, "headers": auth,
                                "json": {**GOOD_ACTION, "kind": "seize"}}, "kind"),
        ("unknown field", 422, {"method": "POST", "path": ACTIONS, "headers": auth,
                                "json": {**GOOD_ACTION, "colour": "red"}}, "colour"),
        ("nested field", 422, {"method": "POST", "path": ACTIONS, "headers": auth,
                               "json": {**GOOD_ACTION, "sources": [{"url": "https://a.example"}]}},
         "sources.0.title"),
        ("body not an object", 422, {"method": "POST", "path": ACTIONS, "headers": auth,
                                     "json": ["ban"]}, None),
        ("conflict", 409, {"method": "POST", "path": ACTIONS, "headers": auth,
                           "json": {**GOOD_ACTION, "id": "us-h200-eased-2025-12-08"}}, "id"),
        ("no token", 401, {"method": "POST", "path": ACTIONS, "json": GOOD_ACTION}, None),
        ("wrong token", 401, {"method": "POST", "path": ACTIONS, "json": GOOD_ACTION,
                              "headers": {"Authorization": "Bearer tl_not-a-token"}}, None),
        ("read-only token", 403, {"method": "POST", "path": ACTIONS, "json": GOOD_ACTION,
                                  "headers": reader}, None),
    ]


def test_every_error_has_the_same_problem_shape(loaded, client, auth, reader_token):
    reader = {"Authorization": f"Bearer {reader_token}"}
    titles: dict[str, str] = {}
    stored = loaded.head()
    for name, status, kwargs, field in _cases(auth, reader):
        kwargs = dict(kwargs)
        response = client.open(kwargs.pop("path"), **kwargs)
        assert response.status_code == status, (name, response.get_data(as_text=True)[:300])
        assert response.mimetype == "application/problem+json", name
        body = response.get_json(force=True)
        assert list(body) == ["type", "title", "status", "detail", "errors"], name
        assert ProblemSchema().validate(body) == {}, name
        assert body["status"] == status, name
        assert body["type"].startswith("/problems/"), name
        assert body["detail"] and "Traceback" not in body["detail"], name
        assert all(isinstance(v, str) for v in body["errors"].values()), name
        if field is not None:
            assert field in body["errors"], (name, body)
        # One problem type, one title, wherever the error came from.
        assert titles.setdefault(body["type"], body["title"]) == body["title"], name
    assert loaded.head() == stored, "a bad request stored something"


def test_405_says_which_methods_are_allowed(client):
    response = client.put("/api/v1/rules")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "GET" in response.get_json()["detail"]


def test_401_challenges_for_a_bearer_token(client):
    response = client.post("/api/v1/rules", json={})
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="timeline"'


def test_an_unexpected_failure_is_a_500_problem_without_internals(client, tracker, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(tracker, "state_list", broken)
    response = client.get("/api/v1/rules")
    assert response.status_code == 500
    body = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert list(body) == ["type", "title", "status", "detail", "errors"]
    assert "secret" not in response.get_data(as_text=True)


def test_pages_outside_the_api_get_html_errors(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
