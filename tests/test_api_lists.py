"""Paged lists: /api/v1/rules and /api/v1/diff a page at a time, each listing one snapshot."""

from __future__ import annotations

from typing import Any

import pytest

H200 = "us-h200-export-licensing-cn"
EMPTY = {"targets": [], "subjects": [], "tags": [], "links": []}
FEE = {"kind": "fee", "effective": "2025-12-09", "rate_percent": 40,
       "summary": "A new levy.", "sources": [{"title": "A notice"}]}


@pytest.fixture
def loaded_client(loaded, app):
    return app.test_client()


def walk(client: Any, url: str, key: str, first: dict | None = None) -> list[dict]:
    """Every page of a listing from ``url``, following next_cursor; ``first`` if fetched."""
    body = first or client.get(url).get_json()
    pages = [body]
    while body["next_cursor"] is not None:
        response = client.get(f"{url}&cursor={body['next_cursor']}")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body)
    return pages


def test_rules_come_a_page_at_a_time_in_rule_id_order(loaded_client):
    whole = loaded_client.get("/api/v1/rules?as_of=2025-12-09&limit=1000").get_json()
    assert len(whole["items"]) == 11 and whole["next_cursor"] is None
    url = f"/api/v1/rules?as_of=2025-12-09&known_at={whole['known_at']}&limit=4"
    pages = walk(loaded_client, url, "items")
    assert [len(page["items"]) for page in pages] == [4, 4, 3]
    assert [item for page in pages for item in page["items"]] == whole["items"]
    assert {page["known_at"] for page in pages} == {whole["known_at"]}


def test_the_default_page_is_a_hundred(loaded, app):
    for n in range(95):
        loaded.register_rule({"id": f"extra-rule-{n:03d}", "title": f"Extra {n}",
                              "jurisdiction": "US", "instrument": "other", **EMPTY})
    client = app.test_client()
    body = client.get("/api/v1/rules").get_json()
    assert len(body["items"]) == 100 and body["next_cursor"]
    rest = client.get(f"/api/v1/rules?cursor={body['next_cursor']}").get_json()
    assert len(rest["items"]) == 6 and rest["next_cursor"] is None


@pytest.mark.slow
def test_a_limit_over_a_thousand_is_answered_with_a_thousand(tracker, app):
    for n in range(1001):
        tracker.register_rule({"id": f"rule-{n:04d}", "title": f"Rule {n}",
                               "jurisdiction": "US", "instrument": "other", **EMPTY})
    client = app.test_client()
    body = client.get("/api/v1/rules?limit=5000").get_json()
    assert len(body["items"]) == 1000 and body["next_cursor"]
    last = client.get(f"/api/v1/rules?limit=5000&cursor={body['next_cursor']}").get_json()
    assert [item["rule"]["id"] for item in last["items"]] == ["rule-1000"]
    assert last["next_cursor"] is None


def test_pages_answer_the_first_pages_snapshot_whatever_is_recorded_meanwhile(
        loaded, loaded_client, auth):
    url = "/api/v1/rules?as_of=2025-12-09&limit=4"
    first = loaded_client.get(url).get_json()
    # Between the pages: a rule that sorts last, and an action that changes a later page's rule.
    created = loaded_client.post("/api/v1/rules", headers=auth, json={
        "id": "zz-new-rule", "title": "New", "jurisdiction": "US", "instrument": "other", **EMPTY})
    assert created.status_code == 201
    assert loaded_client.post(f"/api/v1/rules/{H200}/actions", headers=auth,
                              json=FEE).status_code == 201
    pages = walk(loaded_client, url, "items", first)
    items = [item for page in pages for item in page["items"]]
    ids = [item["rule"]["id"] for item in items]
    assert len(ids) == 11 and "zz-new-rule" not in ids
    h200 = next(item for item in items if item["rule"]["id"] == H200)
    assert h200["rate_percent"] == 25.0 and h200["known_at"] == first["known_at"]
    assert {page["known_at"] for page in pages} == {first["known_at"]}
    # A new listing sees both.
    now = loaded_client.get("/api/v1/rules?as_of=2025-12-09&limit=1000").get_json()["items"]
    assert len(now) == 12
    assert next(i for i in now if i["rule"]["id"] == H200)["rate_percent"] == 40.0


def test_a_cursor_keeps_its_filters_and_day(loaded_client):
    first = loaded_client.get("/api/v1/rules?as_of=2025-12-09&jurisdiction=CN&limit=2").get_json()
    pages = walk(loaded_client, "/api/v1/rules?limit=2", "items", first)
    items = [item for page in pages for item in page["items"]]
    assert items and all(item["rule"]["jurisdiction"] == "CN" for item in items)
    assert {item["as_of"] for item in items} == {"2025-12-09"}
    whole = loaded_client.get("/api/v1/rules?as_of=2025-12-09&jurisdiction=CN&known_at="
                              + first["known_at"]).get_json()
    assert items == whole["items"]


@pytest.mark.parametrize("cursor", ["nonsense", "e30", "W10", "eyJxdWVyeSI6e30sImFmdGVyIjoiIn0"])
def test_a_bad_cursor_is_400(loaded_client, cursor):
    for path in ("/api/v1/rules?", "/api/v1/diff?from=2025-01-01&to=2025-12-09&"):
        response = loaded_client.get(f"{path}cursor={cursor}")
        assert response.status_code == 400
        assert response.content_type == "application/problem+json"
        assert "cursor" in response.get_json()["errors"]


def test_a_cursor_with_another_querys_parameters_is_400(loaded_client):
    cursor = loaded_client.get("/api/v1/rules?as_of=2025-12-09&limit=2").get_json()["next_cursor"]
    for other in ("as_of=2025-12-10", "jurisdiction=US", "known_at=2020-01-01T00:00:00Z"):
        response = loaded_client.get(f"/api/v1/rules?{other}&cursor={cursor}")
        assert response.status_code == 400, other
        assert response.content_type == "application/problem+json"
        assert "another query" in response.get_json()["detail"]
    same = loaded_client.get(f"/api/v1/rules?as_of=2025-12-09&limit=3&cursor={cursor}")
    assert same.status_code == 200 and len(same.get_json()["items"]) == 3
    # A cursor of one listing means nothing to the other.
    response = loaded_client.get(f"/api/v1/diff?from=2025-01-01&to=2025-12-09&cursor={cursor}")
    assert response.status_code == 400


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_a_limit_below_one_is_400(loaded_client, limit):
    for path in ("/api/v1/rules?", "/api/v1/diff?from=2025-01-01&to=2025-12-09&"):
        response = loaded_client.get(f"{path}limit={limit}")
        assert response.status_code == 400
        assert "limit" in response.get_json()["errors"]


def test_diff_comes_a_page_at_a_time(loaded_client):
    url = "/api/v1/diff?from=2020-01-01&to=2025-12-09"
    whole = loaded_client.get(url).get_json()
    assert len(whole["changes"]) >= 3 and whole["next_cursor"] is None
    pages = walk(loaded_client, f"{url}&known_at={whole['known_at']}&limit=2", "changes")
    assert len(pages) == (len(whole["changes"]) + 1) // 2
    changes = [change for page in pages for change in page["changes"]]
    assert changes == whole["changes"]
    ids = [change["rule_id"] for change in changes]
    assert ids == sorted(ids)
    assert all(page["from"] == "2020-01-01" and page["to"] == "2025-12-09" for page in pages)
    for change in changes:
        before, after = change["before"], change["after"]
        assert (before["status"], before["rate_percent"], before["conditions"]) != (
            after["status"], after["rate_percent"], after["conditions"])


def test_diff_pages_answer_the_first_pages_snapshot(loaded_client, auth):
    url = "/api/v1/diff?from=2025-12-07&to=2025-12-09&limit=1"
    first = loaded_client.get(url).get_json()
    assert [change["rule_id"] for change in first["changes"]] == [H200]
    assert first["next_cursor"] is None
    # A change recorded after the first page of a listing that has more pages.
    url = "/api/v1/diff?from=2020-01-01&to=2025-12-09&limit=2"
    first = loaded_client.get(url).get_json()
    before = [c for p in walk(loaded_client, url, "changes", first) for c in p["changes"]]
    assert loaded_client.post("/api/v1/rules/us-safe-chips-bill/actions", headers=auth, json={
        "kind": "ban", "effective": "2025-06-01", "summary": "Banned.",
        "sources": [{"title": "A notice"}]}).status_code == 201
    pages = walk(loaded_client, url, "changes", first)
    assert [c for p in pages for c in p["changes"]] == before
    later = loaded_client.get("/api/v1/diff?from=2020-01-01&to=2025-12-09&limit=1000").get_json()
    assert later["changes"] != before
