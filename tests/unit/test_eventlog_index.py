"""EventLog.load's index (memchr fast path for the three-line shape, general
rule otherwise) against a plain reference: the ends of every whole event."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import encode_event
from backend.storage.eventlog import EventLog

_TEXT = st.text(alphabet=st.sampled_from("ab\r\n\u00e9 :"), max_size=12)
_EVENT = st.one_of(
    st.builds(lambda t, d: ("ours", t, d), st.sampled_from(["status", "log", "done"]), _TEXT),
    # Shapes we never write (extra or missing lines): the general rule handles them.
    st.builds(lambda t: ("odd", t, "extra"), st.sampled_from(["log", "done"])),
    st.builds(lambda t: ("short", t, ""), st.sampled_from(["log", "done"])),
)


def _encode(n: int, shape: str, kind: str, text: str) -> bytes:
    if shape == "ours":
        return encode_event(n, kind, {"lines": [text]})
    if shape == "odd":
        return f"id: {n}\nevent: {kind}\ndata: {{}}\n: extra line\n\n".encode()
    return f"id: {n}\nevent: {kind}\n\n".encode()


def _reference(data: bytes) -> tuple[list[int], bool]:
    ends: list[int] = []
    pos = 0
    last = b""
    while (blank := data.find(b"\n\n", pos)) >= 0:
        start = data.find(b"\nevent: ", pos, blank) + 8
        last = data[start : data.find(b"\n", start)]
        pos = blank + 2
        ends.append(pos)
    return ends, last == b"done"


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENT, max_size=8), st.integers(min_value=0, max_value=80))
def test_load_indexes_whole_events_like_the_general_rule(
    events: list[tuple[str, str, str]], torn: int
) -> None:
    whole = b"".join(_encode(n + 1, *event) for n, event in enumerate(events))
    tail = _encode(len(events) + 1, "ours", "log", "torn")[: min(torn, 40)]
    ends, finished = _reference(whole)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.events"
        path.write_bytes(whole + tail)
        loop = asyncio.new_event_loop()
        try:
            log = EventLog.load(path, loop)
        finally:
            loop.close()
        assert list(log._ends) == ends
        assert log.finished == finished
        assert path.read_bytes() == whole
