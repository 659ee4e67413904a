"""The API's read endpoints over the bundled fixtures, as a researcher would query them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from timeline.config import Settings
from timeline.domain.dates import parse_instant
from timeline.service import Tracker

H200 = "us-h200-export-licensing-cn"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """One app over the bundled fixtures, shared by these read-only tests."""
    from timeline.fixtures import bundled_fixtures, load_fixtures
    from timeline.web import create_app

    tracker = Tracker(Settings(home=tmp_path_factory.mktemp("reads")))
    load_fixtures(tracker, bundled_fixtures())
    yield create_app({"TESTING": True}, tracker=tracker).test_client()
    tracker.close()


def by_id(items: list[dict]) -> dict[str, dict]:
    return {item["rule"]["id"]: item for item in items}


def test_rules_as_of_a_day(client):
    response = client.get("/api/v1/rules?as_of=2025-12-09")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    ids = [item["rule"]["id"] for item in body["items"]]
    assert ids == sorted(ids) and len(ids) == 11
    h200 = by_id(body["items"])[H200]
    assert h200["status"] == "eased"
    assert h200["rate_percent"] == 25.0
    assert h200["since"] == "2025-12-08"
    assert h200["conditions"] == ["Sales only to approved customers vetted by the US Commerce Department"]
    assert h200["certain"] is True
    assert h200["based_on"][-2:] == ["us-h200-eased-2025-12-08", "us-h200-fee-25-2025-12-08"]
    assert h200["rule"]["links"] == [
        {"rule": "us-advanced-ai-chip-export-controls-cn", "relation": "related"}]
    assert body["as_of"] == "2025-12-09"
    assert all(item["as_of"] == "2025-12-09" and item["known_at"] == body["known_at"]
               for item in body["items"])


def test_rules_the_day_before_the_easing(client):
    h200 = by_id(client.get("/api/v1/rules?as_of=2025-12-07").get_json()["items"])[H200]
    assert h200["status"] == "restricted"
    assert h200["rate_percent"] is None


def test_an_uncertain_answer_names_its_actions(client):
    tariff = by_id(client.get("/api/v1/rules?as_of=2025-06-01").get_json()["items"])["us-fentanyl-tariff-cn"]
    assert tariff["status"] == "in_force" and tariff["rate_percent"] == 20.0
    assert tariff["certain"] is False
    assert tariff["uncertain_because"] == ["us-fentanyl-tariff-20-2025"]


def test_rules_default_to_today_and_now(client):
    before = datetime.now(timezone.utc)
    body = client.get("/api/v1/rules").get_json()
    after = datetime.now(timezone.utc)
    assert body["as_of"] in {before.date().isoformat(), after.date().isoformat()}
    assert before - timedelta(seconds=1) <= parse_instant(body["known_at"]) <= after
    assert len(body["items"]) == 11


@pytest.mark.parametrize(
    "query, expected",
    [
        ("jurisdiction=CN", {"cn-fentanyl-precursor-export-controls", "cn-gallium-germanium-export-licensing",
                             "cn-h200-purchase-approvals", "cn-nvidia-h20-purchase-ban",
                             "cn-rare-earth-embargo-jp", "cn-rare-earth-export-restrictions",
                             "cn-us-soybean-purchases"}),
        ("instrument=legislation", {"us-safe-chips-bill"}),
        ("jurisdiction=US&instrument=export_control", {"us-advanced-ai-chip-export-controls-cn", H200}),
        ("q=H200", {H200, "cn-h200-purchase-approvals"}),
        ("q=soybean", {"cn-us-soybean-purchases"}),
        ("jurisdiction=JP", set()),
    ],
)
def test_rules_filters(client, query, expected):
    body = client.get(f"/api/v1/rules?as_of=2025-12-09&{query}").get_json()
    assert {item["rule"]["id"] for item in body["items"]} == expected


def test_known_at_before_anything_was_recorded(client):
    body = client.get("/api/v1/rules?as_of=2025-12-09&known_at=2000-01-01T00:00:00Z").get_json()
    assert body == {"items": [], "next_cursor": None, "as_of": "2025-12-09",
                    "known_at": "2000-01-01T00:00:00.000000Z"}


def test_known_at_in_the_future_is_answered_as_of_now_and_echoed(client):
    before = datetime.now(timezone.utc)
    body = client.get(f"/api/v1/rules/{H200}?known_at=2999-01-01T00:00:00Z").get_json()
    used = parse_instant(body["known_at"])
    assert before.replace(microsecond=0) <= used.replace(microsecond=0) <= datetime.now(timezone.utc)
    again = client.get(f"/api/v1/rules/{H200}?as_of={body['as_of']}&known_at={body['known_at']}")
    assert again.get_json() == body


def test_known_at_with_an_offset_is_read_in_utc(client):
    # Before anything was registered: 404, and the detail names the instant in UTC.
    response = client.get(f"/api/v1/rules/{H200}?known_at=2000-01-01T02:00:00%2B02:00")
    assert response.status_code == 404
    assert "2000-01-01T00:00:00.000000Z" in response.get_json()["detail"]


def test_one_rule(client):
    response = client.get(f"/api/v1/rules/{H200}?as_of=2025-12-09")
    assert response.status_code == 200
    state = response.get_json()
    assert state["rule"]["id"] == H200
    assert (state["status"], state["rate_percent"]) == ("eased", 25.0)
    assert state["version"] == 4  # registered, then three actions
    assert list(state) == ["rule", "as_of", "known_at", "status", "rate_percent", "conditions",
                           "since", "until", "certain", "uncertain_because", "based_on", "version"]


def test_a_paused_rule_says_until_when(client):
    state = client.get("/api/v1/rules/cn-rare-earth-export-restrictions?as_of=2025-12-09").get_json()
    assert state["status"] == "paused"
    assert state["until"] == "2026"
    assert state["rate_percent"] is None and state["conditions"] == []


def test_unknown_rule_is_404(client):
    response = client.get("/api/v1/rules/no-such-rule")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert "no-such-rule" in response.get_json()["detail"]


def test_history_in_effective_order(client):
    response = client.get(f"/api/v1/rules/{H200}/history")
    assert response.status_code == 200
    body = response.get_json()
    assert body["rule_id"] == H200
    assert [item["id"] for item in body["items"]] == [
        "us-h200-restricted-2022", "us-h200-eased-2025-12-08", "us-h200-fee-25-2025-12-08",
    ]
    first = body["items"][0]
    assert first["kind"] == "restrict" and first["effective"] == "2022"
    assert first["sources"][0]["title"].startswith("China has been less than enthusiastic")
    assert first["corrections"] == [] and first["retraction"] is None and first["retracted"] is False
    assert isinstance(first["position"], int) and first["recorded_at"].endswith("Z")


def test_history_of_an_unknown_rule_is_404(client):
    assert client.get("/api/v1/rules/no-such-rule/history").status_code == 404


def test_diff_between_two_days(client):
    response = client.get("/api/v1/diff?from=2025-12-07&to=2025-12-09")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["from"], body["to"]) == ("2025-12-07", "2025-12-09")
    changes = {change["rule_id"]: change for change in body["changes"]}
    assert set(changes) == {H200}
    assert changes[H200]["before"]["status"] == "restricted"
    assert changes[H200]["after"]["status"] == "eased"
    assert changes[H200]["after"]["rate_percent"] == 25.0


def test_diff_with_filters(client):
    body = client.get("/api/v1/diff?from=2025-12-07&to=2025-12-09&jurisdiction=CN").get_json()
    assert body["changes"] == []


def test_diff_needs_both_days(client):
    response = client.get("/api/v1/diff?from=2025-12-07")
    assert response.status_code == 400
    assert response.get_json()["errors"] == {"to": "Missing data for required field."}


def test_timeline_pages_through_every_action_in_effective_order(client):
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/timeline?limit=4" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        assert len(body["items"]) <= 4
        seen.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == 15
    assert len({(item["rule_id"], item["id"]) for item in seen}) == 15
    starts = [item["effective"][:4] for item in seen]
    assert starts == sorted(starts)
    assert seen[0]["id"] == "cn-rare-earth-embargo-jp-2010"
    assert seen[0]["rule_title"] and seen[0]["jurisdiction"] == "CN"


def test_timeline_filters(client):
    body = client.get(f"/api/v1/timeline?rule={H200}").get_json()
    assert [item["id"] for item in body["items"]] == [
        "us-h200-restricted-2022", "us-h200-eased-2025-12-08", "us-h200-fee-25-2025-12-08",
    ]
    december = client.get("/api/v1/timeline?from=2025-12&to=2025-12").get_json()["items"]
    assert december and all(item["effective"].startswith("2025") for item in december)
    assert "us-h200-restricted-2022" not in {item["id"] for item in december}
    fees = client.get("/api/v1/timeline?kind=fee&jurisdiction=US").get_json()["items"]
    assert {item["kind"] for item in fees} == {"fee"}
    assert {item["rule_id"] for item in fees} == {H200, "us-fentanyl-tariff-cn"}


def test_timeline_limit_is_capped_not_refused(client):
    body = client.get("/api/v1/timeline?limit=5000").get_json()
    assert len(body["items"]) == 15 and body["next_cursor"] is None


def test_timeline_from_after_to_is_refused(client):
    response = client.get("/api/v1/timeline?from=2026&to=2025")
    assert response.status_code == 400
    assert "from" in response.get_json()["errors"]


def test_reads_need_no_token(client):
    for url in ("/api/v1/rules", f"/api/v1/rules/{H200}", f"/api/v1/rules/{H200}/history",
                "/api/v1/diff?from=2025-01-01&to=2025-12-31", "/api/v1/timeline",
                "/api/v1/openapi.json"):
        assert client.get(url).status_code == 200, url
