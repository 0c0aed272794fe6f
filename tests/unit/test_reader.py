"""backend.storage.reader: the one event reader and line joiner."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import encode_event
from backend.storage.reader import (
    Event,
    EventSplitter,
    LineJoiner,
    decode_events,
    index_events,
    join_lines,
    parse_event,
    read_events,
)
from tests.support.output import Operation, assemble, whole_lines


def log(first: int, lines: list[str], partial: bool = False, stream: str = "stdout") -> Event:
    return Event("0", "log", {"stream": stream, "first": first, "lines": lines, "partial": partial})


def encoded(*data: tuple[str, Any]) -> bytes:
    return b"".join(encode_event(i, kind, value) for i, (kind, value) in enumerate(data, 1))


SAMPLE = encoded(
    ("status", {"status": "running", "at": "t"}),
    ("log", {"stream": "stdout", "first": 1, "lines": ["a\r", "b\n\nc"], "partial": False}),
    ("notice", {"message": "id: 9\nevent: done\ndata: {}\n\n"}),
    ("done", {"status": "succeeded"}),
)


# -- events -----------------------------------------------------------------------------


def test_parse_event_fast_path_and_sse_rules_agree() -> None:
    ours = parse_event(b'id: 7\nevent: log\ndata: {"a":1}')
    general = parse_event(b': hi\r\nevent:log\r\ndata: {"a":1}\r\nid: 7')
    assert ours == general == Event("7", "log", {"a": 1})
    assert ours.number == 7


def test_a_comment_is_no_event() -> None:
    assert parse_event(b": ping - 2026-11-29") is None
    assert decode_events(b": ping\r\n\r\n" + SAMPLE + b": ping\n\n")[0].type == "status"


def test_decode_leaves_out_a_torn_tail() -> None:
    events = decode_events(SAMPLE + b"id: 5\nevent: log\ndata: {")
    assert [e.number for e in events] == [1, 2, 3, 4]
    assert events[2].data["message"].startswith("id: 9")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SAMPLE)), max_size=12))
def test_splitter_does_not_care_how_bytes_are_chunked(cuts: list[int]) -> None:
    splitter = EventSplitter()
    blocks: list[bytes] = []
    previous = 0
    for cut in [*sorted(cuts), len(SAMPLE)]:
        blocks += splitter.feed(SAMPLE[previous:cut])
        previous = cut
    assert blocks == [b[:-2] for b in _event_bytes(SAMPLE)]
    assert splitter.rest == b""


def _event_bytes(raw: bytes) -> list[bytes]:
    ends = array("q")
    index_events(raw, ends)
    starts = [0, *ends[:-1]]
    return [raw[s:e] for s, e in zip(starts, ends, strict=True)]


def test_read_events_from_an_offset_through_an_id(tmp_path: Path) -> None:
    path = tmp_path / "run.events"
    path.write_bytes(SAMPLE + b"id: 5\nevent: lo")  # a run still writing
    assert [e.number for e in read_events(path)] == [1, 2, 3, 4]
    assert [e.number for e in read_events(path, upto=2)] == [1, 2]
    ends = array("q")
    index_events(SAMPLE, ends)
    assert [e.type for e in read_events(path, offset=ends[2], chunk=7)] == ["done"]
    assert list(read_events(tmp_path / "missing.events")) == []


def test_index_reports_the_last_whole_event_and_its_type() -> None:
    ends = array("q")
    pos, last_type = index_events(SAMPLE + b"id: 5\nev", ends)
    assert pos == len(SAMPLE) and last_type == b"done" and len(ends) == 4


# -- lines ------------------------------------------------------------------------------


def test_partial_lines_are_completed_in_place() -> None:
    joiner = LineJoiner()
    lines = join_lines(
        [
            log(1, ["one", "tw"], partial=True),
            log(2, ["o", "thr"], partial=True),
            log(3, ["ee"], partial=True),  # still open after a second piece
            log(3, ["", "four"]),
        ],
        joiner,
    )
    assert [(line.n, line.text, line.partial) for line in lines] == [
        (1, "one", False),
        (2, "two", False),
        (3, "three", False),
        (4, "four", False),
    ]
    assert joiner.problems == [] and joiner.total == 4 and joiner.open_lines() == []


def test_an_open_line_waits_while_another_stream_prints() -> None:
    joiner = LineJoiner()
    lines = join_lines(
        [
            log(1, ["prompt> "], partial=True),
            log(2, ["err 1", "err 2"], stream="stderr"),
            log(1, ["answer"]),  # the continuation goes alone...
            log(4, ["next"]),  # ...and new lines get the next numbers
        ],
        joiner,
    )
    assert [(line.n, line.stream, line.text) for line in lines] == [
        (1, "stdout", "prompt> answer"),
        (2, "stderr", "err 1"),
        (3, "stderr", "err 2"),
        (4, "stdout", "next"),
    ]
    assert joiner.problems == []


def test_broken_numbering_is_noted() -> None:
    joiner = LineJoiner()
    join_lines([log(1, ["a", "b"]), log(2, ["b again"]), log(9, ["x"], partial=True)], joiner)
    join_lines([log(8, ["y"])], joiner)
    assert joiner.problems == [
        "stdout line 2 after line 2",
        "stdout line 9 after line 2",
        "stdout continues line 8, but line 9 is open",
    ]


def test_a_line_open_at_the_end_is_reported_open() -> None:
    joiner = LineJoiner()
    lines = join_lines([log(1, ["a", "b"], partial=True), log(2, ["c"], partial=True)], joiner)
    assert [line.text for line in lines] == ["a", "bc"]
    assert [(line.n, line.text, line.partial) for line in joiner.open_lines()] == [(2, "bc", True)]


_PIECES = [b"a", b"b", b"\n", b"\r\n", b"\xc3", b"\xa9", "é€".encode()]
operations = st.lists(
    st.tuples(
        st.sampled_from(["stdout", "stderr", "flush"]),
        st.lists(st.sampled_from(_PIECES), max_size=6).map(b"".join),
        st.sampled_from([0.0, 0.1, 0.3]),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_joined_lines_are_the_lines_each_stream_printed(ops: list[Operation]) -> None:
    batches, printed, assembler = assemble(ops)
    joiner = LineJoiner()
    lines = join_lines([log(b.first, b.lines, b.partial, b.stream) for b in batches], joiner)
    assert joiner.problems == []
    assert [line.n for line in lines] == list(range(1, assembler.line_count + 1))
    for stream, data in printed.items():
        assert [line.text for line in lines if line.stream == stream] == whole_lines(data)


def test_a_line_sent_in_many_parts_is_joined_once() -> None:
    """A line continued by thousands of events is not copied again for each:
    its text is brought up to date when it completes or is read."""
    joiner = LineJoiner()
    piece = "x" * 1000
    first = joiner.feed({"stream": "stdout", "first": 1, "lines": [piece], "partial": True})
    line = first.opened
    assert line is not None
    for _ in range(999):
        joiner.feed({"stream": "stdout", "first": 1, "lines": [piece], "partial": True})
        assert line.text == piece  # not joined (copied) on each continuation
    assert joiner.open_length("stdout") == 1000 * len(piece)
    assert joiner.open_lines() == [line] and line.text == piece * 1000 and line.partial
    done = joiner.feed({"stream": "stdout", "first": 1, "lines": ["end"], "partial": False})
    assert done.continued is line
    assert line.text == piece * 1000 + "end" and not line.partial
    assert joiner.open_count == 0
