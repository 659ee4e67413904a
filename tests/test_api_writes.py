"""Writes through the API: register, record, correct, retract; repeats; tokens; racing writers."""

from __future__ import annotations

import threading

import pytest

from timeline.service import Tracker
from timeline.web import create_app

H200 = "us-h200-export-licensing-cn"
SOURCE = [{"title": "Commerce Department notice", "url": "https://example.org/notice"}]


def rule(rule_id: str = "jp-chip-tool-export-controls", **fields) -> dict:
    return {"id": rule_id, "title": "Japan's export controls on chip-making tools",
            "jurisdiction": "JP", "instrument": "export_control", "targets": ["CN"],
            "subjects": ["chip-making tools"], "tags": ["semiconductors"], **fields}


def action(**fields) -> dict:
    return {"kind": "restrict", "effective": "2023-07-23", "summary": "Licences needed.",
            "sources": SOURCE, **fields}


@pytest.fixture
def h200(loaded: Tracker, client):
    """The bundled fixtures are loaded; tests write on the H200 rule."""
    return client


def head(tracker: Tracker) -> int:
    return tracker.head()


# Registering rules -----------------------------------------------------------------------


def test_register_a_rule(client, auth, tracker):
    response = client.post("/api/v1/rules", json=rule(), headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert {k: body[k] for k in rule()} == rule()
    assert body["links"] == [] and isinstance(body["position"], int)
    assert body["recorded_at"].endswith("Z")
    assert response.headers["Location"].endswith("/api/v1/rules/jp-chip-tool-export-controls")
    state = client.get(response.headers["Location"]).get_json()
    assert state["status"] == "none" and state["version"] == 1


def test_registering_again_with_identical_fields_records_nothing(client, auth, tracker):
    first = client.post("/api/v1/rules", json=rule(), headers=auth)
    stored = head(tracker)
    again = client.post("/api/v1/rules", json=rule(), headers=auth)
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert head(tracker) == stored


def test_registering_again_with_other_fields_is_409(client, auth, tracker):
    client.post("/api/v1/rules", json=rule(), headers=auth)
    stored = head(tracker)
    response = client.post("/api/v1/rules", json=rule(title="Another title"), headers=auth)
    assert response.status_code == 409
    assert response.get_json()["errors"] == {"id": "already registered with other fields"}
    assert head(tracker) == stored
    stored_rule = client.get("/api/v1/rules/jp-chip-tool-export-controls").get_json()["rule"]
    assert stored_rule["title"] == rule()["title"]


def test_a_link_must_name_a_registered_rule(client, auth, tracker):
    response = client.post("/api/v1/rules", json=rule(links=[{"rule": "no-such-rule", "relation": "amends"}]),
                           headers=auth)
    assert response.status_code == 422
    assert "links" in response.get_json()["errors"]
    assert head(tracker) == 0


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"id": "X"}, "id"),
        ({"id": "us-chips\n"}, "id"),  # a pattern's $ alone would let the newline through
        ({"jurisdiction": "XX"}, "jurisdiction"),
        ({"targets": ["CN", "ZZ"]}, "targets.1"),
        ({"instrument": "tariff"}, "instrument"),
        ({"title": "t" * 301}, "title"),
        ({"links": [{"rule": "us-h200-export-licensing-cn", "relation": "likes"}]}, "links.0.relation"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rule_fields_are_422_by_field(client, auth, tracker, bad, field):
    response = client.post("/api/v1/rules", json=rule(**bad), headers=auth)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert head(tracker) == 0


# Recording, correcting and retracting actions ----------------------------------------------


def test_record_correct_retract_and_ask_at_each_instant(h200, auth, loaded):
    client = h200
    url = f"/api/v1/rules/{H200}"

    def state(known_at: str | None = None, as_of: str = "2025-12-20") -> dict:
        query = f"?as_of={as_of}" + (f"&known_at={known_at}" if known_at else "")
        response = client.get(url + query)
        assert response.status_code == 200
        return response.get_json()

    start = state()
    assert (start["status"], start["rate_percent"]) == ("eased", 25.0)

    # Record a ban on 15 December 2025.
    recorded = client.post(f"{url}/actions", headers=auth, json=action(
        id="us-h200-ban-2025-12-15", kind="ban", effective="2025-12-15", summary="Banned again."))
    assert recorded.status_code == 201
    written = recorded.get_json()
    assert written["id"] == "us-h200-ban-2025-12-15"
    after_ban = state()
    assert after_ban["status"] == "banned" and after_ban["since"] == "2025-12-15"
    assert after_ban["rate_percent"] == 25.0  # a ban keeps the rate
    assert after_ban["version"] == start["version"] + 1

    # Correct its date to 22 December: on the 20th, the easing is back in force.
    corrected = client.post(f"{url}/actions/us-h200-ban-2025-12-15/corrections", headers=auth,
                            json={"reason": "The ban takes effect a week later.", "effective": "2025-12-22"})
    assert corrected.status_code == 201
    correction = corrected.get_json()
    assert correction["position"] > written["position"]
    assert correction["recorded_at"] > written["recorded_at"]
    after_correction = state()
    assert after_correction["status"] == "eased"
    assert state(as_of="2025-12-22")["status"] == "banned"

    # Retract the fee: the rate goes, the easing stays.
    retracted = client.post(f"{url}/actions/us-h200-fee-25-2025-12-08/retraction", headers=auth,
                            json={"reason": "Recorded in error."})
    assert retracted.status_code == 201
    after_retraction = state()
    assert after_retraction["status"] == "eased" and after_retraction["rate_percent"] is None
    assert "us-h200-fee-25-2025-12-08" not in after_retraction["based_on"]

    # Asked as known just before each write, every answer is the one given then.
    def just_before(instant: str) -> str:
        from datetime import timedelta

        from timeline.domain.dates import format_instant, parse_instant

        return format_instant(parse_instant(instant) - timedelta(microseconds=1))

    for instant, expected in [
        (just_before(written["recorded_at"]), start),
        (written["recorded_at"], after_ban),
        (just_before(correction["recorded_at"]), after_ban),
        (correction["recorded_at"], after_correction),
        (just_before(retracted.get_json()["recorded_at"]), after_correction),
    ]:
        answer = state(known_at=instant)
        assert answer["known_at"] == instant
        assert {k: v for k, v in answer.items() if k != "known_at"} == \
            {k: v for k, v in expected.items() if k != "known_at"}

    # The history shows the correction and the retraction, and what it was before.
    history = client.get(f"{url}/history").get_json()["items"]
    ban = next(item for item in history if item["id"] == "us-h200-ban-2025-12-15")
    assert ban["effective"] == "2025-12-22"
    assert ban["original"]["effective"] == "2025-12-15"
    assert ban["corrections"][0]["reason"] == "The ban takes effect a week later."
    assert ban["corrections"][0]["previous"] == {"effective": "2025-12-15"}
    fee = next(item for item in history if item["id"] == "us-h200-fee-25-2025-12-08")
    assert fee["retracted"] is True and fee["retraction"]["reason"] == "Recorded in error."
    # And as known before the correction, the history does not have it yet.
    earlier = client.get(f"{url}/history?known_at={written['recorded_at']}").get_json()["items"]
    assert next(item for item in earlier if item["id"] == "us-h200-ban-2025-12-15")["corrections"] == []


def test_a_server_made_action_id(h200, auth):
    response = h200.post(f"/api/v1/rules/{H200}/actions", headers=auth, json=action(effective="2026-01"))
    assert response.status_code == 201
    assert response.get_json()["id"].startswith("restrict-")


def test_a_repeated_client_id_with_the_same_body_answers_the_first_result(h200, auth, loaded):
    first = h200.post(f"/api/v1/rules/{H200}/actions", headers=auth, json=action(id="a-1"))
    stored = head(loaded)
    again = h200.post(f"/api/v1/rules/{H200}/actions", headers=auth, json=action(id="a-1"))
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert head(loaded) == stored


def test_a_repeated_client_id_with_another_body_is_409(h200, auth, loaded):
    h200.post(f"/api/v1/rules/{H200}/actions", headers=auth, json=action(id="a-1"))
    stored = head(loaded)
    response = h200.post(f"/api/v1/rules/{H200}/actions", headers=auth,
                         json=action(id="a-1", effective="2024"))
    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert head(loaded) == stored


def test_idempotency_key_replays_the_first_answer(h200, auth, loaded):
    headers = {**auth, "Idempotency-Key": "retry-me-1"}
    first = h200.post(f"/api/v1/rules/{H200}/actions", headers=headers, json=action())
    stored = head(loaded)
    # Same body, keys in another order: still the same request.
    again = h200.post(f"/api/v1/rules/{H200}/actions", headers=headers,
                      json=dict(reversed(list(action().items()))))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert head(loaded) == stored
    assert len(h200.get(f"/api/v1/timeline?rule={H200}").get_json()["items"]) == 4


def test_idempotency_key_with_another_body_is_422(h200, auth, loaded):
    headers = {**auth, "Idempotency-Key": "retry-me-2"}
    h200.post(f"/api/v1/rules/{H200}/actions", headers=headers, json=action())
    stored = head(loaded)
    response = h200.post(f"/api/v1/rules/{H200}/actions", headers=headers, json=action(effective="2024"))
    assert response.status_code == 422
    assert "Idempotency-Key" in response.get_json()["errors"]
    assert head(loaded) == stored


def test_idempotency_key_on_registration_replays_201(client, auth, tracker):
    headers = {**auth, "Idempotency-Key": "register-once"}
    first = client.post("/api/v1/rules", json=rule(), headers=headers)
    again = client.post("/api/v1/rules", json=rule(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert head(tracker) == 1


def test_idempotency_key_on_a_correction(h200, auth, loaded):
    headers = {**auth, "Idempotency-Key": "correct-once"}
    url = f"/api/v1/rules/{H200}/actions/us-h200-fee-25-2025-12-08/corrections"
    body = {"reason": "The fee is 15%.", "rate_percent": 15}
    first = h200.post(url, headers=headers, json=body)
    again = h200.post(url, headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.get_json() == again.get_json()
    fee = next(i for i in h200.get(f"/api/v1/rules/{H200}/history").get_json()["items"]
               if i["id"] == "us-h200-fee-25-2025-12-08")
    assert len(fee["corrections"]) == 1


def test_a_malformed_idempotency_key_is_400(h200, auth, loaded):
    response = h200.post(f"/api/v1/rules/{H200}/actions", json=action(),
                         headers={**auth, "Idempotency-Key": "x" * 300})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["errors"]
    assert head(loaded) == 26


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"kind": "restrict", "rate_percent": 5}, "rate_percent"),
        ({"kind": "fee"}, "rate_percent"),
        ({"kind": "fee", "rate_percent": 1001}, "rate_percent"),
        ({"kind": "fee", "rate_percent": "5"}, "rate_percent"),
        ({"kind": "ban", "until": "2027"}, "until"),
        ({"kind": "pause", "effective": "2026-03-10", "until": "2026-03"}, "until"),
        ({"kind": "lift", "conditions": ["none"]}, "conditions"),
        ({"kind": "seize"}, "kind"),
        ({"effective": "2025-02-30"}, "effective"),
        ({"effective": "12/08/2025"}, "effective"),
        ({"sources": []}, "sources"),
        ({"sources": [{"url": "https://example.org"}]}, "sources.0.title"),
        ({"sources": [{"title": "x", "url": "ftp://example.org"}]}, "sources.0.url"),
        ({"summary": "s" * 5001}, "summary"),
        ({"conditions": ["c"] * 51}, "conditions"),
        ({"id": "has space"}, "id"),
        ({"id": "a-1\n"}, "id"),
        ({"recorded_at": "2020-01-01T00:00:00Z"}, "recorded_at"),
    ],
)
def test_invalid_action_fields_are_422_and_store_nothing(h200, auth, loaded, fields, field):
    stored = head(loaded)
    response = h200.post(f"/api/v1/rules/{H200}/actions", headers=auth, json=action(**fields))
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"], response.get_json()
    assert head(loaded) == stored


def test_an_action_on_an_unknown_rule_is_404(client, auth):
    response = client.post("/api/v1/rules/no-such-rule/actions", headers=auth, json=action())
    assert response.status_code == 404


def test_correcting_an_unknown_action_is_404(h200, auth):
    response = h200.post(f"/api/v1/rules/{H200}/actions/nope/corrections", headers=auth,
                         json={"reason": "r", "summary": "s"})
    assert response.status_code == 404


def test_a_correction_needs_a_reason_and_a_change(h200, auth, loaded):
    url = f"/api/v1/rules/{H200}/actions/us-h200-fee-25-2025-12-08/corrections"
    no_reason = h200.post(url, headers=auth, json={"rate_percent": 15})
    assert no_reason.status_code == 422 and "reason" in no_reason.get_json()["errors"]
    no_change = h200.post(url, headers=auth, json={"reason": "nothing"})
    assert no_change.status_code == 422
    not_correctable = h200.post(url, headers=auth, json={"reason": "r", "kind": "ban"})
    assert not_correctable.status_code == 422 and "kind" in not_correctable.get_json()["errors"]
    breaks_kind = h200.post(f"/api/v1/rules/{H200}/actions/us-h200-eased-2025-12-08/corrections",
                            headers=auth, json={"reason": "r", "rate_percent": 5})
    assert breaks_kind.status_code == 422 and "rate_percent" in breaks_kind.get_json()["errors"]
    assert head(loaded) == 26


def test_a_retracted_action_cannot_be_retracted_or_corrected(h200, auth, loaded):
    url = f"/api/v1/rules/{H200}/actions/us-h200-fee-25-2025-12-08"
    assert h200.post(f"{url}/retraction", headers=auth, json={"reason": "error"}).status_code == 201
    assert h200.post(f"{url}/retraction", headers=auth, json={"reason": "again"}).status_code == 409
    assert h200.post(f"{url}/corrections", headers=auth,
                     json={"reason": "r", "rate_percent": 5}).status_code == 409
    assert head(loaded) == 27


def test_a_retraction_takes_only_a_reason(h200, auth, loaded):
    url = f"/api/v1/rules/{H200}/actions/us-h200-fee-25-2025-12-08/retraction"
    assert h200.post(url, headers=auth, json={}).status_code == 422
    assert h200.post(url, headers=auth, json={"reason": "r", "effective": "2025"}).status_code == 422
    assert head(loaded) == 26


# Tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer tl_wrong"},
     {"Authorization": "Basic dXNlcjpwYXNz"}],
)
def test_writes_without_a_valid_token_are_401(h200, loaded, headers):
    response = h200.post(f"/api/v1/rules/{H200}/actions", json=action(), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert head(loaded) == 26


def test_a_read_only_token_is_403(h200, loaded, settings):
    from timeline.tokens import TokenStore

    token = TokenStore(settings).create("reader", can_write=False)
    response = h200.post(f"/api/v1/rules/{H200}/actions", json=action(),
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert head(loaded) == 26


def test_a_token_made_while_the_server_runs_writes_at_once(h200, loaded, settings, auth):
    from timeline.tokens import TokenStore

    assert h200.post(f"/api/v1/rules/{H200}/actions", json=action(id="first"),
                     headers=auth).status_code == 201
    token = TokenStore(settings).create("newcomer")  # as `timeline token create` does
    response = h200.post(f"/api/v1/rules/{H200}/actions", json=action(id="second"),
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    wrong = h200.post(f"/api/v1/rules/{H200}/actions", json=action(id="third"),
                      headers={"Authorization": f"Bearer {token}x"})
    assert wrong.status_code == 401


def test_the_token_is_checked_before_the_body(client):
    response = client.post("/api/v1/rules", data="not json", content_type="text/plain")
    assert response.status_code == 401


# Racing writers --------------------------------------------------------------------------


def test_two_writers_racing_on_one_rule_lose_no_event(loaded, settings, auth):
    """Two apps on one store (as two server processes would be), each with its own threads."""
    apps = [create_app({"TESTING": True}, tracker=loaded),
            create_app({"TESTING": True}, tracker=Tracker(settings))]
    per_writer = 10
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer(app, name: str) -> None:
        try:
            client = app.test_client()
            barrier.wait()
            for i in range(per_writer):
                response = client.post(
                    f"/api/v1/rules/{H200}/actions", headers=auth,
                    json=action(id=f"{name}-{i}", effective=f"2026-01-{i + 1:02d}", kind="restrict"))
                results.append(response.status_code)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(app, f"w{n}-{k}"))
               for n, app in enumerate(apps) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [201] * (4 * per_writer)
    history = apps[1].test_client().get(f"/api/v1/rules/{H200}/history").get_json()["items"]
    assert len(history) == 3 + 4 * per_writer
    state = apps[0].test_client().get(f"/api/v1/rules/{H200}?as_of=2026-02-01").get_json()
    assert state["version"] == 4 + 4 * per_writer
    positions = [item["position"] for item in history]
    assert len(set(positions)) == len(positions)
    apps[1].extensions["timeline"].close()


def test_the_same_idempotency_key_sent_at_once_stores_one_event(loaded, auth):
    app = create_app({"TESTING": True}, tracker=loaded)
    stored = head(loaded)
    answers: list[tuple[int, dict]] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(f"/api/v1/rules/{H200}/actions", json=action(effective="2026-03"),
                               headers={**auth, "Idempotency-Key": "sent-four-times"})
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [201] * 4
    assert all(body == answers[0][1] for _, body in answers)
    assert head(loaded) == stored + 1
