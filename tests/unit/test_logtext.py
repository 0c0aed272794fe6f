"""log_text: a run's plain-text log rebuilt from its event file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import encode_event
from backend.runs.lines import LogBatch
from backend.storage.logtext import log_text
from tests.support.output import assemble, whole_lines

Event = tuple[str, dict[str, Any]]


def log(stream: str, first: int, lines: list[str], partial: bool = False) -> Event:
    return ("log", {"stream": stream, "first": first, "lines": lines, "partial": partial})


def encode(events: list[Event]) -> bytes:
    return b"".join(encode_event(i, kind, data) for i, (kind, data) in enumerate(events, 1))


def text_of(path: Path, stream: str | None = None, chunk: int = 1 << 20) -> str:
    return b"".join(log_text(path, stream, chunk)).decode("utf-8")


def write(tmp_path: Path, events: list[Event], name: str = "run.events") -> Path:
    path = tmp_path / name
    path.write_bytes(encode(events))
    return path


STATUS: Event = ("status", {"status": "running", "at": "2024-01-01T00:00:00.000Z"})
DONE: Event = ("done", {"status": "succeeded", "exit_code": 0})


def test_lines_in_order_other_events_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            STATUS,
            ("pull", {"layer": None, "status": "Pulling from x"}),
            log("stdout", 1, ["one", "two"]),
            ("notice", {"message": "event: log\ndata: not a log line"}),
            log("stderr", 3, ["three"]),
            DONE,
        ],
    )
    assert text_of(path) == "one\ntwo\nthree\n"


def test_partial_lines_are_joined_and_written_when_complete(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            log("stdout", 1, ["ab"], partial=True),
            log("stderr", 2, ["err"]),
            log("stdout", 1, ["cd"], partial=True),
            log("stdout", 1, ["ef", "next"]),
            DONE,
        ],
    )
    # stdout's line 1 is complete only at the fourth event: stderr's line comes first
    # and the two are never mixed within a line.
    assert text_of(path) == "err\nabcdef\nnext\n"
    assert text_of(path, "stdout") == "abcdef\nnext\n"
    assert text_of(path, "stderr") == "err\n"
    assert text_of(path, "tty") == ""


def test_empty_continuation_terminates_a_partial_line(tmp_path: Path) -> None:
    path = write(tmp_path, [log("stdout", 1, ["ab"], partial=True), log("stdout", 1, [""])])
    assert text_of(path) == "ab\n"


def test_open_partial_at_the_end_is_written_last(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            log("stdout", 1, ["done "], partial=True),
            log("stdout", 1, ["so far"], partial=True),
            log("stderr", 2, ["e1", "e2"]),
        ],
    )
    assert text_of(path) == "e1\ne2\ndone so far\n"
    assert text_of(path, "stdout") == "done so far\n"


def test_partial_that_also_ends_a_multi_line_batch(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [log("tty", 1, ["a", "b", "c"], partial=True), log("tty", 3, ["d", "e"])],
    )
    assert text_of(path) == "a\nb\ncd\ne\n"


def test_awkward_characters_survive(tmp_path: Path) -> None:
    lines = ["cr\rinside", "sep\u2028arator", "nul\x00", "\ufffd bad", "emoji 😀", ""]
    path = write(tmp_path, [log("stdout", 1, lines)])
    assert text_of(path) == "".join(line + "\n" for line in lines)


def test_empty_file(tmp_path: Path) -> None:
    assert text_of(write(tmp_path, [])) == ""


def test_event_still_being_written_does_not_break_reading(tmp_path: Path) -> None:
    """While a run goes, the reader may see the start of an event the writer has not
    finished writing: the whole events before it are the log, and reading must not fail."""
    complete = encode([log("stdout", 1, ["first"]), log("stdout", 2, ["second"])])
    last = encode_event(3, "log", {"stream": "stdout", "first": 3, "lines": ["third"]})
    path = tmp_path / "run.events"
    for cut in range(1, len(last)):
        path.write_bytes(complete + last[:cut])
        # Once the JSON is whole, taking the event early is harmless too.
        assert text_of(path) in ("first\nsecond\n", "first\nsecond\nthird\n"), cut


SAMPLE: list[Event] = [
    STATUS,
    log("stdout", 1, ["alpha", "beta"]),
    log("stderr", 3, ["par"], partial=True),
    log("stdout", 4, ["gamma é"], partial=True),
    log("stderr", 3, ["tial", "x\ry"]),
    ("notice", {"message": "hello"}),
    log("stdout", 4, ["", "delta"], partial=True),
    DONE,
]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=80))
def test_read_chunk_size_does_not_matter(chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), SAMPLE)
        for stream in (None, "stdout", "stderr"):
            assert text_of(path, stream, chunk) == text_of(path, stream)


# -- end to end from raw bytes through LineAssembler ------------------------------------


def completion_order(batches: list[LogBatch], stream: str | None = None) -> list[str]:
    """Lines in the order they become complete (a subscriber's view)."""
    open_text: dict[str, str] = {}
    out: list[str] = []
    for batch in batches:
        if stream is not None and batch.stream != stream:
            continue
        lines = list(batch.lines)
        if batch.stream in open_text:
            lines[0] = open_text.pop(batch.stream) + lines[0]
        if batch.partial:
            open_text[batch.stream] = lines.pop()
        out += lines
    return out + list(open_text.values())


_PIECES = [b"a", b"b", b"\n", b"\r", b"\r\n", b"\xc3", b"\xa9", b"\xff", "é€".encode()]
chunks = st.one_of(
    st.binary(max_size=8), st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join)
)
operations = st.lists(
    st.tuples(
        st.sampled_from(["stdout", "stderr", "flush"]),
        chunks,
        st.sampled_from([0.0, 0.1, 0.3, 1.0]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.booleans(), st.integers(min_value=1, max_value=200))
def test_log_text_of_assembled_output(ops: list[Any], finished: bool, chunk: int) -> None:
    batches, fed, _ = assemble(ops, finished=finished)
    events = [STATUS]
    events += [log(b.stream, b.first, b.lines, b.partial) for b in batches]
    if finished:
        events.append(DONE)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), events)
        assert text_of(path, None, chunk) == "".join(
            line + "\n" for line in completion_order(batches)
        )
        for stream in ("stdout", "stderr"):
            got = text_of(path, stream, chunk)
            assert got == "".join(line + "\n" for line in completion_order(batches, stream))
            if finished:
                assert got == "".join(line + "\n" for line in whole_lines(fed[stream]))
