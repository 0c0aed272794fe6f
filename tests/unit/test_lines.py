"""LineAssembler: raw bytes -> numbered lines per stream, partial lines after a delay."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from backend.runs.lines import LineAssembler, LogBatch
from tests.support.output import whole_lines

DELAY = 0.25


# -- reference model ---------------------------------------------------------------


@dataclass
class Reader:
    """What a subscriber rebuilds from batches, checking the numbering rules as it goes."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    open: dict[str, int | None] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)  # line number -> stream
    new_numbers: list[int] = field(default_factory=list)  # in emission order
    duplicates: list[tuple[int, str, str]] = field(default_factory=list)

    def take(self, batches: list[LogBatch]) -> None:
        for batch in batches:
            assert batch.lines, batch
            assert batch.first >= 1, batch
            for line in batch.lines:
                assert "\n" not in line, batch
            lines = self.lines.setdefault(batch.stream, [])
            number = batch.first
            todo = list(batch.lines)
            open_number = self.open.get(batch.stream)
            if open_number is not None:
                # A stream's next batch after a partial line must continue it.
                assert batch.first == open_number, (batch, open_number)
                lines[-1] += todo.pop(0)
                number += 1
            for line in todo:
                lines.append(line)
                if number in self.owner:
                    self.duplicates.append((number, self.owner[number], batch.stream))
                self.owner[number] = batch.stream
                self.new_numbers.append(number)
                number += 1
            if batch.partial:
                assert len(batch.lines) == 1, batch
                self.open[batch.stream] = batch.first + len(batch.lines) - 1
            else:
                self.open[batch.stream] = None

    def open_text(self, stream: str) -> str:
        """Everything emitted so far for a stream, as text: complete lines end in LF."""
        lines = self.lines.get(stream, [])
        if self.open.get(stream) is None:
            return "".join(line + "\n" for line in lines)
        return "".join(line + "\n" for line in lines[:-1]) + lines[-1]


# -- strategies ----------------------------------------------------------------------

# Bytes rich in line ends, stray CRs and broken or split UTF-8 sequences.
_PIECES = [b"a", b"b", b" ", b"\n", b"\r", b"\r\n", b"\xc3", b"\xa9", b"\xe2", b"\x82", b"\xac"]
_PIECES += [b"\xff", b"\xf0\x9f\x98", b"\x80", "é€😀".encode()]
chunks = st.one_of(
    st.binary(max_size=16),
    st.lists(st.sampled_from(_PIECES), max_size=10).map(b"".join),
    st.sampled_from([b"x", b"x\n", b"\nx", b"x\ny", b"x\ny\n", b"\n\n", b"x\r"]),
)
delays = st.sampled_from([0.0, 0.0, 0.1, 0.2, 0.25, 0.3, 1.0])


def ops(streams: list[str]) -> st.SearchStrategy[list[tuple[str, str, bytes, float]]]:
    feed = st.tuples(st.just("feed"), st.sampled_from(streams), chunks, delays)
    flush = st.tuples(st.just("flush"), st.just(""), st.just(b""), delays)
    return st.lists(st.one_of(feed, feed, flush), max_size=40)


def run(
    operations: list[tuple[str, str, bytes, float]], *, finish: bool = True
) -> tuple[LineAssembler, Reader, dict[str, bytes], float]:
    assembler = LineAssembler(DELAY)
    reader = Reader()
    fed: dict[str, bytes] = {}
    now = 100.0
    for kind, stream, data, dt in operations:
        now += dt
        if kind == "feed":
            fed[stream] = fed.get(stream, b"") + data
            reader.take(assembler.feed(stream, data, now))
        else:
            reader.take(assembler.flush_due(now))
    if finish:
        reader.take(assembler.finish())
    return assembler, reader, fed, now


# -- decoding ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(chunks, max_size=12))
def test_incremental_utf8_decoding_equals_whole_decoding(parts: list[bytes]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = "".join(decoder.decode(part) for part in parts) + decoder.decode(b"", final=True)
    assert text == b"".join(parts).decode("utf-8", "replace")


def test_whole_lines_reference() -> None:
    assert whole_lines(b"") == []
    assert whole_lines(b"\n") == [""]
    assert whole_lines(b"a\r\nb\rc\n\r\r\nd\r") == ["a", "b\rc", "\r", "d\r"]
    assert whole_lines(b"x\xff\n") == ["x\ufffd"]


# -- targeted cases -----------------------------------------------------------------------


def test_lf_and_crlf_end_lines_and_other_cr_stays() -> None:
    a = LineAssembler(DELAY)
    batches = a.feed("stdout", b"one\ntwo\r\nthree\rsame\n\r\r\n", 0.0)
    assert batches == [LogBatch("stdout", 1, ["one", "two", "three\rsame", "\r"], False)]
    assert a.line_count == 4
    assert a.finish() == []


def test_crlf_split_across_chunks() -> None:
    a = LineAssembler(DELAY)
    assert a.feed("stdout", b"abc\r", 0.0) == []
    assert a.feed("stdout", b"\nnext", 0.1) == [LogBatch("stdout", 1, ["abc"], False)]
    assert a.finish() == [LogBatch("stdout", 2, ["next"], False)]


def test_invalid_utf8_is_replaced_and_split_sequences_are_joined() -> None:
    a = LineAssembler(DELAY)
    out = a.feed("stdout", b"bad \xff\xfe ok\n\xe2\x82", 0.0)
    out += a.feed("stdout", b"\xac\n", 0.0)
    assert out == [
        LogBatch("stdout", 1, ["bad \ufffd\ufffd ok"], False),
        LogBatch("stdout", 2, ["€"], False),
    ]


def test_truncated_utf8_at_eof_becomes_one_replacement_character() -> None:
    a = LineAssembler(DELAY)
    assert a.feed("stdout", b"tail\xe2\x82", 0.0) == []
    assert a.finish() == [LogBatch("stdout", 1, ["tail\ufffd"], False)]


def test_partial_line_only_after_delay() -> None:
    a = LineAssembler(DELAY)
    assert a.next_deadline() is None
    assert a.feed("stdout", b"progress", 10.0) == []
    assert a.next_deadline() == 10.0 + DELAY
    assert a.feed("stdout", b" 10%", 10.2) == []
    assert a.next_deadline() == 10.0 + DELAY  # the wait counts from the first byte
    assert a.flush_due(10.0 + DELAY - 0.01) == []
    assert a.flush_due(10.0 + DELAY) == [LogBatch("stdout", 1, ["progress 10%"], True)]
    assert a.next_deadline() is None
    assert a.flush_due(99.0) == []  # nothing new: nothing to send


def test_partial_continued_by_later_batches_under_same_number() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"abc", 0.0)
    assert a.flush_due(1.0) == [LogBatch("stdout", 1, ["abc"], True)]
    a.feed("stdout", b"def", 1.1)
    assert a.flush_due(2.0) == [LogBatch("stdout", 1, ["def"], True)]
    assert a.feed("stdout", b"ghi\nnext\n", 2.1) == [LogBatch("stdout", 1, ["ghi", "next"], False)]
    assert a.line_count == 2


def test_partial_then_newline_gives_empty_continuation() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"abc", 0.0)
    a.flush_due(1.0)
    assert a.feed("stdout", b"\n", 1.1) == [LogBatch("stdout", 1, [""], False)]
    assert a.finish() == []
    assert a.line_count == 1


def test_finish_terminates_open_partial_with_empty_continuation() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"abc", 0.0)
    a.flush_due(1.0)
    assert a.finish() == [LogBatch("stdout", 1, [""], False)]
    assert a.line_count == 1


def test_finish_after_trailing_newline_emits_nothing() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"a\nb\n", 0.0)
    assert a.finish() == []
    assert a.line_count == 2


def test_trailing_cr_held_back_by_flush_in_case_lf_follows() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"abc\r", 0.0)
    assert a.flush_due(1.0) == [LogBatch("stdout", 1, ["abc"], True)]
    assert a.feed("stdout", b"\n", 1.1) == [LogBatch("stdout", 1, [""], False)]


def test_trailing_cr_at_eof_stays_in_the_line() -> None:
    a = LineAssembler(DELAY)
    a.feed("stdout", b"abc\r", 0.0)
    a.flush_due(1.0)
    assert a.finish() == [LogBatch("stdout", 1, ["\r"], False)]


def test_numbers_are_counted_over_the_whole_run_across_streams() -> None:
    a = LineAssembler(DELAY)
    out = a.feed("stdout", b"o1\no2\n", 0.0)
    out += a.feed("stderr", b"e1\n", 0.0)
    out += a.feed("stdout", b"o3\n", 0.0)
    assert [(b.stream, b.first, b.lines) for b in out] == [
        ("stdout", 1, ["o1", "o2"]),
        ("stderr", 3, ["e1"]),
        ("stdout", 4, ["o3"]),
    ]
    assert a.line_count == 4


def test_continuation_after_another_streams_line_keeps_numbers_unique() -> None:
    """A batch's lines are numbered first, first+1, ...: after a continuation the
    next new line must not reuse a number another stream already took."""
    a = LineAssembler(DELAY)
    reader = Reader()
    reader.take(a.feed("stdout", b"abc", 0.0))
    reader.take(a.flush_due(1.0))  # stdout line 1, partial
    reader.take(a.feed("stderr", b"err\n", 1.1))  # stderr line 2
    reader.take(a.feed("stdout", b"def\nnext\n", 1.2))  # completes 1, then a new line
    reader.take(a.finish())
    assert reader.lines == {"stdout": ["abcdef", "next"], "stderr": ["err"]}
    assert a.line_count == 3
    assert reader.duplicates == [], "a line number was given to two different lines"
    assert sorted(reader.owner) == [1, 2, 3]


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(ops(["stdout"]))
def test_one_stream_any_chunking_and_flushes_equals_whole_decoding(operations) -> None:
    assembler, reader, fed, _ = run(operations)
    assert reader.lines.get("stdout", []) == whole_lines(fed.get("stdout", b""))
    assert reader.open.get("stdout") is None  # finish() terminated any partial line
    assert reader.duplicates == []
    assert reader.new_numbers == list(range(1, assembler.line_count + 1))


@settings(max_examples=400, deadline=None)
@given(ops(["stdout", "stderr"]))
def test_two_streams_any_chunking_and_flushes_equal_whole_decoding(operations) -> None:
    assembler, reader, fed, _ = run(operations)
    for stream in ("stdout", "stderr"):
        assert reader.lines.get(stream, []) == whole_lines(fed.get(stream, b""))
        assert reader.open.get(stream) is None
    assert assembler.line_count == sum(map(len, reader.lines.values()))


@settings(max_examples=400, deadline=None)
@given(ops(["stdout", "stderr"]))
@example(
    [
        ("feed", "stdout", b"abc", 0.0),
        ("flush", "", b"", 0.25),
        ("feed", "stderr", b"err\n", 0.0),
        ("feed", "stdout", b"\n\n", 0.0),
    ]
)
def test_two_streams_line_numbers_unique_consecutive_increasing(operations) -> None:
    assembler, reader, _, _ = run(operations)
    assert reader.duplicates == []
    # Every number 1..line_count is used, new lines get them in increasing order.
    assert reader.new_numbers == list(range(1, assembler.line_count + 1))


@settings(max_examples=300, deadline=None)
@given(ops(["stdout", "stderr"]))
def test_flush_after_delay_leaves_no_stale_text(operations) -> None:
    """After flush_due(now + delay), everything decodable so far has been emitted,
    except one trailing CR (it may be the start of CRLF)."""
    assembler, reader, fed, now = run(operations, finish=False)
    reader.take(assembler.flush_due(now + DELAY))
    assert assembler.next_deadline() is None
    for stream, data in fed.items():
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
        assert reader.open_text(stream) == text


@settings(max_examples=300, deadline=None)
@given(ops(["stdout", "stderr"]))
def test_nothing_is_emitted_as_partial_before_its_delay(operations) -> None:
    """A partial batch at time `now` needs a byte of that stream that arrived after
    the stream's previous batch and at least `delay` before `now`."""
    assembler = LineAssembler(DELAY)
    now = 0.0
    feeds: dict[str, list[float]] = {}
    last_batch: dict[str, float] = {}
    for kind, stream, data, dt in operations:
        now += dt
        if kind == "feed":
            if data:
                feeds.setdefault(stream, []).append(now)
            batches = assembler.feed(stream, data, now)
            assert not any(b.partial for b in batches), "feed() never emits partial lines"
        else:
            batches = assembler.flush_due(now)
            for batch in batches:
                assert batch.partial
                since = last_batch.get(batch.stream, float("-inf"))
                waited = [t for t in feeds[batch.stream] if since <= t <= now - DELAY]
                assert waited, (batch, now, feeds[batch.stream], since)
        for batch in batches:
            last_batch[batch.stream] = now
