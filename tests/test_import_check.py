"""The import check's quick yes never lets through what the API's marshmallow schemas refuse.

Every example is checked both ways: :class:`PlainlyValid` may only say "valid" where the schema
(its fields and its own schema-level validators) finds nothing. Where it says "cannot tell" for
valid data, the import asks marshmallow and loses only time; a test counts those, so that a
change making the quick yes useless shows.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marshmallow import ValidationError, fields, pre_load, validates, validates_schema

from timeline.domain.errors import InvalidInput
from timeline.import_check import PlainlyValid
from timeline.schemas import CorrectionSchema, FileActionSchema, RetractionSchema, RuleSchema
from timeline.service import Tracker

SOURCE = {"title": "Asia Times, December 2025", "url": "https://asiatimes.com/2025/12/x/",
          "publisher": "Asia Times", "published": "2025-12-09", "quote": "allowed"}
GOOD = {
    "rule": [
        {"id": "us-h200-export-licensing-cn", "title": "H200 exports", "jurisdiction": "US",
         "instrument": "export_control", "targets": ["CN", "EU"], "subjects": ["chips"],
         "tags": ["ai"], "links": [{"rule": "us-ai-chips", "relation": "amends"}]},
        {"id": "cn-soy", "title": "Soybeans", "jurisdiction": "CN", "instrument": "other"},
    ],
    "action": [
        {"id": "a-1", "kind": "fee", "effective": "2025-12-08", "announced": "2025-12",
         "rate_percent": 25, "conditions": ["approved customers"], "summary": "A fee.",
         "sources": [SOURCE]},
        {"kind": "pause", "effective": "2025-11", "until": "2026-11-10",
         "sources": [{"title": "Reuters"}, SOURCE]},
        {"kind": "resume", "effective": "2026", "sources": [{"title": "x"}]},
        {"kind": "fee", "effective": "2025-10-01", "rate_percent": 12.5,
         "sources": [{"title": "x", "published": "2024"}]},
    ],
    "correction": [
        {"reason": "a typo", "effective": "2025-12-09", "rate_percent": 0, "announced": None,
         "until": None, "conditions": [], "summary": "", "sources": [SOURCE]},
        {"reason": "x"},
    ],
    "retraction": [{"reason": "never happened"}],
}
SCHEMAS = {"rule": RuleSchema(), "action": FileActionSchema(), "correction": CorrectionSchema(),
           "retraction": RetractionSchema()}
QUICK = {name: PlainlyValid(schema) for name, schema in SCHEMAS.items()}

TRICKY: list[Any] = [
    None, "", " ", "x", "x" * 101, "x" * 301, "x" * 501, "x" * 5001, 0, -1, 5, 12.5, 1000,
    1000.5, 10**30, -0.0, math.nan, math.inf, -math.inf, True, False, [], [""], ["x"], ["x", 5],
    [None], ["x"] * 51, {}, {"title": "x"}, [{"title": "x"}], [{"title": ""}], [{}],
    [{"title": "x", "url": "ftp://example.com/"}], [{"title": "x", "url": "https://localhost/"}],
    [{"title": "x", "url": "not a url"}], [{"title": "x", "published": "2025-13"}],
    [{"title": "x", "published": "2025-02-30"}], [{"title": "x", "extra": 1}],
    [{"title": "x"}] * 21, "2025", "2025-02", "2025-02-29", "2024-02-29", "2025-13",
    "2025-00", "0000", "2025-1-01", "2025-12-09\n", "\u0662\u0660\u0662\u0665", "US", "EU",
    "XX", "us", "CN\n", "ban", "fee", "pause", "embargo", "amends", "abc", "abc\n", "ab",
    "a" * 81, "a-1", "-a", "a b", "\ud800", "export_control",
    [{"rule": "us-x", "relation": "amends"}], [{"rule": "u", "relation": "amends"}],
    [{"rule": "us-x", "relation": "likes"}],
]


def marshmallow_passes(name: str, data: Any) -> bool:
    return not SCHEMAS[name].validate(data)


def single_changes() -> list[tuple[str, dict[str, Any]]]:
    """Every good example with one field set to each tricky value, dropped, or added."""
    cases = []
    for name, examples in GOOD.items():
        keys = sorted({key for example in examples for key in example} | {"colour"})
        for example in examples:
            cases.append((name, example))
            for key in keys:
                if key in example:
                    cases.append((name, {k: v for k, v in example.items() if k != key}))
                for value in TRICKY:
                    cases.append((name, {**example, key: copy.deepcopy(value)}))
    return cases


CASES = single_changes()


def test_the_quick_check_passes_nothing_marshmallow_refuses():
    for name, data in CASES:
        if QUICK[name](data):
            assert marshmallow_passes(name, data), (name, data)


def test_the_quick_check_passes_all_valid_data():
    valid = [(name, data) for name, data in CASES if marshmallow_passes(name, data)]
    assert len(valid) > 200
    assert [(name, data) for name, data in valid if not QUICK[name](data)] == []


@st.composite
def changed(draw: st.DrawFn) -> tuple[str, Any]:
    """A good example with several changes, nested ones included."""
    name = draw(st.sampled_from(sorted(GOOD)))
    data = copy.deepcopy(draw(st.sampled_from(GOOD[name])))
    value = st.sampled_from(TRICKY).map(copy.deepcopy)
    for _ in range(draw(st.integers(1, 4))):
        target = data
        if draw(st.booleans()) and isinstance(data.get("sources"), list) and data["sources"]:
            target = data["sources"][0] = dict(data["sources"][0])
        key = draw(st.sampled_from(sorted(set(target) | {"colour", "title", "url"})))
        if draw(st.booleans()):
            target[key] = draw(value)
        else:
            target.pop(key, None)
    return name, data


@pytest.mark.slow
@settings(max_examples=600, deadline=None, derandomize=True)
@given(changed())
def test_the_quick_check_passes_nothing_marshmallow_refuses_after_several_changes(
    case: tuple[str, Any],
):
    name, data = case
    if QUICK[name](data):
        assert marshmallow_passes(name, data)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_quick_check_says_valid_to_the_good_examples(name: str):
    assert all(QUICK[name](example) for example in GOOD[name])


# Web addresses: the quick yes for plain ones must be one marshmallow gives too.
URLS = [
    "https://example.org", "https://example.org/", "http://www.example.org/a/b?c=1#d",
    "https://example.org?q=1", "https://example.org#top", "https://EXAMPLE.org/",
    "HTTPS://example.org/", "https://example.org:8080/", "https://user@example.org/",
    "https://user:pw@example.org/", "https://-bad.example.org/", "https://bad-.example.org/",
    "https://a..b.org/", "https://.example.org/", "https://example.org./", "https://example.o/",
    "https://example.toolongtld/", "https://example.c0m/", "https://192.168.0.1/",
    "https://[::1]/", "https://localhost/", "https://example/", "ftp://example.org/",
    "file:///etc/passwd", "https:/example.org/", "https//example.org/", "://example.org/",
    "https://exämple.org/", "https://例え.jp/", "https://example.org/ a", "https://example.org/\n",
    "https://example.org\n", "https://example.org/\u00a0x", "https://example.org/\u2028",
    "https://" + "a" * 63 + ".org/", "https://" + "a" * 64 + ".org/", "https://x.org/" + "é" * 30,
    " https://example.org/", "https://example.org/%zz", "https://ex_ample.org/",
    "https://xn--bcher-kva.example/", "https://a.b.c.d.e.f.g.example.org/path/to/thing.pdf",
]


def with_url(url: Any) -> dict[str, Any]:
    return {**GOOD["action"][0], "sources": [{"title": "x", "url": url}]}


@pytest.mark.parametrize("url", URLS)
def test_a_web_address_passes_quickly_only_where_marshmallow_takes_it(url: str):
    data = with_url(url)
    if QUICK["action"](data):
        assert marshmallow_passes("action", data)
    else:  # the quick check still tells the same as marshmallow, by asking it
        assert not marshmallow_passes("action", data)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, derandomize=True)
@given(st.sampled_from(["http://", "https://", "HTTP://", "ftp://", ""]),
       st.text(st.sampled_from("abcXYZ019.-_:@/?#% é\n"), max_size=30))
def test_no_made_up_address_passes_quickly_that_marshmallow_refuses(scheme: str, rest: str):
    data = with_url(scheme + rest)
    assert QUICK["action"](data) == marshmallow_passes("action", data)


# Schema-level validators: run by the quick yes itself, so that none can be left out.

class NoSecretRules(RuleSchema):
    @validates_schema
    def _no_secrets(self, data: dict[str, Any], **_: Any) -> None:
        if "secret" in data["title"] or data["tags"] == []:  # ``tags`` as loaded: its default
            raise ValidationError("no secret rules", "title")


def test_a_schema_level_validator_is_applied_by_the_quick_yes():
    quick = PlainlyValid(NoSecretRules())
    good = GOOD["rule"][0]
    assert quick(good)
    assert not quick({**good, "title": "a secret rule"})
    assert not quick({k: v for k, v in good.items() if k != "tags"})


class FieldValidated(RuleSchema):
    @validates("title")
    def _title(self, value: str, **_: Any) -> None:
        raise ValidationError("never")


class PreLoaded(RuleSchema):
    @pre_load
    def _strip(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return data


class WithNested(RetractionSchema):
    rule = fields.Nested(NoSecretRules)


@pytest.mark.parametrize("schema", [FieldValidated(), PreLoaded()], ids=["validates", "pre_load"])
def test_a_schema_with_a_hook_the_quick_yes_cannot_run_is_left_to_marshmallow(schema: Any):
    assert not PlainlyValid(schema)(GOOD["rule"][0])


def test_a_nested_schemas_validators_are_applied_by_the_quick_yes():
    quick = PlainlyValid(WithNested())
    assert quick({"reason": "x", "rule": GOOD["rule"][0]})
    assert not quick({"reason": "x", "rule": {**GOOD["rule"][0], "title": "secret"}})


def test_a_new_schema_level_validator_is_applied_on_import(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
):
    """A validator added to the API's schema refuses an import line with no other change."""
    from timeline import import_check
    from timeline.events import RULE_REGISTERED

    rule = {"id": "cn-soy", "title": "Soybeans", "jurisdiction": "CN", "instrument": "other",
            "targets": [], "subjects": [], "tags": ["food"], "links": []}
    good = {"type": RULE_REGISTERED, "rule_id": "cn-soy", "version": 1,
            "recorded_at": "2025-12-09T00:00:00.000000Z", "data": rule}
    secret = {**good, "rule_id": "cn-secret", "recorded_at": "2025-12-10T00:00:00.000000Z",
              "data": {**rule, "id": "cn-secret", "title": "a secret rule"}}
    monkeypatch.setattr(import_check, "RuleSchema", NoSecretRules)
    with pytest.raises(InvalidInput, match="line 2: title: no secret rules"):
        tracker.import_records(lambda: iter([good, secret]))
    assert tracker.app.head() == 0
    assert tracker.import_records(lambda: iter([good])) == 1
