"""SSE encoding of events: one `data:` line of JSON, exact round trip."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import EventType, encode_data, encode_event, now_rfc3339
from backend.storage.reader import decode_events

_WIRE = re.compile(rb"^id: ([^\r\n]*)\nevent: ([^\r\n]*)\ndata: ([^\r\n]*)\n\n$")


def test_wire_format_is_exact() -> None:
    raw = encode_event(7, EventType.LOG, {"stream": "stdout", "first": 1, "lines": ["hi"]})
    assert raw == (b'id: 7\nevent: log\ndata: {"stream":"stdout","first":1,"lines":["hi"]}\n\n')
    assert decode_events(raw) == [("7", "log", {"stream": "stdout", "first": 1, "lines": ["hi"]})]


def test_string_ids_for_the_global_feed() -> None:
    raw = encode_event("1a2b3c4d-12", EventType.RUN, {"id": "r1"})
    assert raw.startswith(b"id: 1a2b3c4d-12\nevent: run\n")
    assert decode_events(raw) == [("1a2b3c4d-12", "run", {"id": "r1"})]


@pytest.mark.parametrize(
    "text",
    ["a\rb", "a\nb", "a\r\nb", "\n\n", "x\u2028y\u2029z", "nul\x00byte", "\x85next line", "\ufffd"],
)
def test_awkward_text_stays_on_one_data_line_and_round_trips(text: str) -> None:
    raw = encode_event(1, "log", {"lines": [text]})
    assert b"\r" not in raw
    assert raw.count(b"\n") == 4  # three field lines and the blank line
    assert _WIRE.match(raw)
    assert decode_events(raw) == [("1", "log", {"lines": [text]})]


def test_lone_surrogates_are_rejected_but_never_produced_by_decoding() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        encode_data({"lines": ["\ud800"]})
    # The log pipeline decodes with errors="replace", which never yields surrogates.
    text = b"\xed\xa0\x80 \xff".decode("utf-8", "replace")
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    encode_data({"lines": [text]})


def test_event_types_are_the_documented_names() -> None:
    assert {t.value for t in EventType} == {
        "status",
        "pull",
        "log",
        "notice",
        "done",
        "run",
        "deleted",
        "reset",
        "engine",
    }


def test_now_rfc3339_shape() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now_rfc3339())


def test_decode_many_events_in_order() -> None:
    raw = b"".join(encode_event(i, "status", {"n": i}) for i in range(1, 6))
    assert decode_events(raw) == [(str(i), "status", {"n": i}) for i in range(1, 6)]
    assert decode_events(b"") == []


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=6), st.integers(min_value=1, max_value=10**9))
def test_any_log_lines_round_trip(lines: list[str], event_id: int) -> None:
    data = {"stream": "stderr", "first": 1, "lines": lines, "partial": False}
    raw = encode_event(event_id, EventType.LOG, data)
    assert b"\r" not in raw
    assert raw.count(b"\n") == 4
    assert _WIRE.match(raw)
    assert decode_events(raw) == [(str(event_id), "log", data)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_lines_decoded_from_any_bytes_round_trip(data: bytes) -> None:
    lines = data.decode("utf-8", "replace").split("\n")
    raw = encode_event(1, "log", {"lines": lines})
    assert b"\r" not in raw
    assert decode_events(raw) == [("1", "log", {"lines": lines})]


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5))
def test_any_json_data_round_trips_in_a_concatenated_stream(values: list[Any]) -> None:
    raw = b"".join(encode_event(i, "notice", v) for i, v in enumerate(values, 1))
    assert b"\r" not in raw
    assert raw.count(b"\n\n") == len(values)
    decoded = decode_events(raw)
    assert [d[0] for d in decoded] == [str(i) for i in range(1, len(values) + 1)]
    assert [d[2] for d in decoded] == values
