"""The event store's transcoder reads every stored state exactly as eventsourcing's own does."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.application import EventTranscoder

WHEN = datetime(2025, 10, 14, 9, 30, 0, 123456, tzinfo=timezone.utc)


def transcoders() -> tuple[JSONTranscoder, EventTranscoder]:
    plain, ours = JSONTranscoder(), EventTranscoder()
    for transcoder in (plain, ours):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return plain, ours


PLAIN, OURS = transcoders()


def reading(transcoder: JSONTranscoder, data: bytes) -> str:
    try:
        return repr(transcoder.decode(data))  # types, order, NaN and -0.0 included
    except Exception as exc:
        return f"fails: {type(exc).__name__}"


def same_reading(state: dict) -> None:
    data = PLAIN.encode(state)
    assert reading(OURS, data) == reading(PLAIN, data)


@pytest.mark.parametrize("state", [
    {"timestamp": WHEN, "action": {"id": "a1", "kind": "fee", "rate_percent": 25.0,
                                   "effective": "2025-10", "summary": "Fee of 25% — “approved”"},
     "request": None},
    {"timestamp": WHEN, "action_id": "a1", "changes": {"summary": None, "rate_percent": 1e-05}},
    {"timestamp": WHEN.replace(microsecond=0), "action_id": "a1", "reason": "wrong date"},
    {"timestamp": WHEN.astimezone(timezone(timedelta(hours=8))), "title": "x"},
    # Other transcoded values, or what only looks like one: read the general way.
    {"timestamp": WHEN, "action": {"id": "a1", "_type_": "datetime_iso", "_data_": "x"}},
    {"timestamp": WHEN, "action": {"summary": "_type_", "kind": "ban"}},
    {"timestamp": WHEN, "other": WHEN, "uuid": UUID(int=7), "amount": Decimal("1.10")},
    {"timestamp": WHEN, "rate": float("nan")},
    {"timestamp": WHEN, "big": 2**70, "u64": 2**64 - 1, "f": 0.1234567890123456789, "small": -0.0, "text": "\x00\u2028\U0001f600"},
    {"timestamp": {"_type_": "unknown", "x": 1}, "n": 1},
    {"title": "no timestamp at all"},
])
def test_every_stored_state_reads_as_eventsourcing_reads_it(state: dict) -> None:
    same_reading(state)


def test_an_unknown_transcoding_fails_as_eventsourcing_fails() -> None:
    data = b'{"timestamp":{"_type_":"nobody_knows","_data_":"x"}}'
    assert reading(OURS, data) == reading(PLAIN, data) == "fails: TranscodingNotRegisteredError"


def test_the_fast_path_is_taken_for_the_project_s_events() -> None:
    """The common case returns the timestamp as a datetime, parsed by orjson (not the hook)."""
    data = PLAIN.encode({"timestamp": WHEN, "action": {"id": "a1", "kind": "ban"}})
    calls = []
    ours = EventTranscoder()
    ours.register(DatetimeAsISO())
    ours._decode_obj = lambda d: calls.append(d) or d  # type: ignore[method-assign]
    assert ours.decode(data)["timestamp"] == WHEN
    assert calls == []


# What can be stored: UTF-8 has no lone surrogates. Keys lean towards the transcoder's own.
text = st.text(st.characters(exclude_categories=("Cs",)))
keys = st.sampled_from(["_type_", "_data_", "timestamp", "id"]) | st.text(
    st.characters(exclude_categories=("Cs",)), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=5), st.booleans())
def test_any_state_reads_as_eventsourcing_reads_it(state: dict, stamped: bool) -> None:
    if stamped:
        state = {**state, "timestamp": WHEN}
    same_reading(state)


def test_a_snapshot_with_times_in_its_aggregate_state_reads_the_same():
    # A rule's snapshot: its own time, and the rule's creation and last change in its state.
    snapshot = {"originator_id": "r", "originator_version": 60, "timestamp": WHEN,
                "topic": "timeline.domain.model:Rule.Snapshot",
                "state": {"_created_on": WHEN, "_modified_on": WHEN + timedelta(days=1),
                          "title": "A rule", "links": [],
                          "actions": {"a": [2, False, "0123456789abcdef", "ban", "2025", None,
                                            None, None, []]}}}
    same_reading(snapshot)
    decoded = OURS.decode(PLAIN.encode(snapshot))
    assert decoded["state"]["_modified_on"] == WHEN + timedelta(days=1)
    # A time deeper in the state is read the general way, and still the same.
    same_reading({**snapshot, "state": {**snapshot["state"], "nested": {"at": WHEN}}})
