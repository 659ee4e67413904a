"""fastjson reads every line as json reads it, and writes what json writes."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timeline import fastjson


def reading(load, text: str) -> str:
    try:
        return repr(load(text))  # types, key order, NaN and -0.0 included
    except json.JSONDecodeError as exc:
        return f"fails: {exc.msg} at {exc.pos}"


@pytest.mark.parametrize("text", [
    '{"type":"action_recorded","data":{"rate_percent":25.0,"summary":"“fee” — 25%"}}',
    '{"big": 12345678901234567890123, "u64": 18446744073709551615, "neg": -9223372036854775809}',
    '{"f": 0.30000000000000004441, "g": 1e-7, "h": -0.0, "i": 1E400}',
    '{"a": NaN, "b": Infinity, "c": -Infinity}',
    '{"a": 1, "a": 2}',
    '{"lone": "\\ud800", "pair": "\\ud83d\\ude00", "nul": "\\u0000"}',
    '  {"spaced" : [ 1 , 2 ] }  \n',
    '{"id": "0000000000000000000 digits in a string"}',
    '{"unterminated": "x}',
    '{"trailing": 1,}',
    '[1, 2] extra',
    "",
    "{'single': 'quotes'}",
    '"just a string"',
])
def test_a_line_reads_as_json_reads_it(text: str) -> None:
    assert reading(fastjson.loads, text) == reading(json.loads, text)


scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80)
           | st.floats() | st.text(st.characters(exclude_categories=("Cs",))))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=15,
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(values, st.sampled_from([{}, {"ensure_ascii": False}, {"indent": 1}]))
def test_any_json_text_reads_as_json_reads_it(value: object, options: dict) -> None:
    text = json.dumps(value, **options)
    assert reading(fastjson.loads, text) == reading(json.loads, text)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_text_at_all_reads_or_fails_as_json(text: str) -> None:
    assert reading(fastjson.loads, text) == reading(json.loads, text)


def plain_floats(value: object) -> bool:
    """No float that the two write differently (NaN, infinities, under 1e-4)."""
    if isinstance(value, float):
        return math.isfinite(value) and (value == 0 or abs(value) >= 1e-4)
    if isinstance(value, list):
        return all(plain_floats(v) for v in value)
    if isinstance(value, dict):
        return all(plain_floats(v) for v in value.values())
    return True


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(values)
def test_it_writes_what_json_writes(value: object) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if plain_floats(value):
        assert fastjson.dumps(value) == expected
    elif "NaN" not in expected and "Infinity" not in expected:
        assert json.loads(fastjson.dumps(value)) == json.loads(expected)  # the same numbers
