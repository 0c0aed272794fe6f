"""The one reader of pullrun's event streams, and the one joiner of log lines.

A run's event file, its replay and its live stream are the same bytes: each
event is `id: N\\nevent: TYPE\\ndata: JSON\\n\\n` (events.encode_event); a
live stream adds keepalive comments (`: ...\\n\\n`). Everything that reads
them (the event index, the run page's snapshot, the text download, crash
recovery, the tests' SSE client and the benchmarks' client) cuts and parses
events here, and joins the lines of `log` events with `LineJoiner`.
static/js/logmodel.js is the browser's copy of the joiner; shared fixtures
(tests/js/fixtures) keep the two in step.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

READ_CHUNK = 1 << 20


class Event(NamedTuple):
    id: str  # a run's events count 1, 2, 3...; the run feed's are `<boot>-<n>`
    type: str
    data: Any

    @property
    def number(self) -> int:
        return int(self.id)


def parse_event(block: bytes) -> Event | None:
    """One event's bytes, without its closing blank line; None for a comment.

    Our own three-line form takes the fast path; anything else is read by the
    SSE rules (fields in any order, `:` comments, CR LF line ends).
    """
    if block.startswith(b"id: "):
        head, sep, data = block.partition(b"\ndata: ")
        id_line, sep2, event_type = head.partition(b"\nevent: ")
        if sep and sep2 and b"\n" not in event_type and b"\n" not in data:
            return Event(id_line[4:].decode(), event_type.decode(), orjson.loads(data))
    fields: dict[bytes, bytes] = {}
    for line in block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        fields[name] = value[1:] if value.startswith(b" ") else value
    if b"data" not in fields:
        return None
    return Event(
        fields.get(b"id", b"").decode(),
        fields.get(b"event", b"message").decode(),
        orjson.loads(fields[b"data"]),
    )


class EventSplitter:
    """Cuts a byte stream into whole events, however it arrives in chunks."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events (as bytes, without their blank line) that `chunk` completes."""
        buf = self._rest + chunk if self._rest else chunk
        if b"\r" in buf:  # a keepalive comment of another writer may end in CR LF
            buf = buf.replace(b"\r\n", b"\n")
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._rest = buf
            return []
        self._rest = buf[cut + 2 :]
        return [block for block in buf[:cut].split(b"\n\n") if block and block[0] != 0x3A]

    @property
    def rest(self) -> bytes:
        """Bytes of an event not yet complete (a torn tail, at the end)."""
        return self._rest


def decode_events(raw: bytes) -> list[Event]:
    """The whole events in `raw`; a torn tail and comments are left out."""
    events = (parse_event(block) for block in EventSplitter().feed(raw))
    return [event for event in events if event is not None]


def read_events(
    path: Path, *, offset: int = 0, upto: int | None = None, chunk: int = READ_CHUNK
) -> Iterator[Event]:
    """A run's events from its file, from byte `offset` (an event's start, as
    the event index gives it) through event `upto` (all when None).

    Only whole events: a run still writing, or a torn final write, leaves its
    last bytes out. A missing file has no events.
    """
    splitter = EventSplitter()
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        while data := os.pread(f.fileno(), chunk, offset):
            offset += len(data)
            for block in splitter.feed(data):
                event = parse_event(block)
                if event is None:
                    continue
                if upto is not None and event.number > upto:
                    return
                yield event


def index_events(data: bytes | Any, ends: array[int], start: int = 0) -> tuple[int, bytes]:
    """Append to `ends` where each whole event of `data` (bytes or an mmap)
    from byte `start` (an event's start) ends.

    Returns (end of the last whole event, its type). Our events are exactly
    three lines and a blank line, so three one-byte searches (memchr) find an
    event's end; a search for the blank line would step through the data line
    byte by byte, ~10x slower. Anything else falls back to that general search.
    """
    size = len(data)
    find = data.find
    pos = start
    last_type = b""
    while pos < size:
        id_end = find(b"\n", pos)
        type_end = find(b"\n", id_end + 1) if id_end >= 0 else -1
        data_end = find(b"\n", type_end + 1) if type_end >= 0 else -1
        if (
            type_end + 1 < data_end < size - 1
            and data[data_end + 1] == 0x0A
            and data[id_end + 1 : id_end + 8] == b"event: "
        ):
            end = data_end + 2
            last_type = data[id_end + 8 : type_end]
        else:
            blank = find(b"\n\n", pos)
            if blank < 0:
                break  # a torn final write
            type_start = find(b"\nevent: ", pos, blank) + 8
            last_type = data[type_start : find(b"\n", type_start)]
            end = blank + 2
        ends.append(end)
        pos = end
    return pos, last_type


def lines_begun(data: Any, lines: int) -> int:
    """The highest line number begun through a `log` event with `data`, `lines`
    before it (the event index's second word: storage/eventlog.py)."""
    try:
        texts = data["lines"]
        return max(lines, int(data["first"]) + len(texts) - 1) if texts else lines
    except (KeyError, TypeError, ValueError):
        return lines  # not a log event of ours: it begins no line


def scan_events(
    data: bytes | Any, start: int, lines: int
) -> tuple[int, list[tuple[int, bytes, int]]]:
    """What the event index (storage/eventlog.py) holds of the whole events
    of `data` from byte `start`: (end of the last whole one, [(end, type,
    highest line number begun through it)]), `lines` the number before.
    """
    ends: array[int] = array("q")
    pos, _ = index_events(data, ends, start)
    entries = []
    prev = start
    for end in ends:
        head = data[prev : min(end, prev + 80)]
        type_start = head.find(b"\nevent: ") + 8
        type_end = head.find(b"\n", type_start)
        if type_start >= 8 and type_end >= 0:
            kind = head[type_start:type_end]
        else:  # (a type line longer than ours; never written by us)
            block = bytes(data[prev:end])
            type_start = block.find(b"\nevent: ") + 8
            kind = block[type_start : block.find(b"\n", type_start)] if type_start >= 8 else b""
        if kind == b"log":
            try:
                event = parse_event(bytes(data[prev : end - 2]))
            except ValueError:
                event = None  # not a log event of ours: it begins no line
            if event is not None:
                lines = lines_begun(event.data, lines)
        entries.append((end, kind, lines))
        prev = end
    return pos, entries


# -- log lines -----------------------------------------------------------------------


# No slots: orjson writes a dataclass with a __dict__ as fast as a dict,
# one with slots some 7x slower (the snapshot's lines, issue 12).
@dataclass
class Line:
    n: int  # numbered per run, across streams
    stream: str
    text: str
    partial: bool = False  # still open: the next `log` event of its stream continues it
    # When it was read: its `log` event's `at` (its first part's, for a line
    # sent in parts); None in logs written before events had it.
    at: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "stream": self.stream,
            "text": self.text,
            "partial": self.partial,
            "at": self.at,
        }


class Joined(NamedTuple):
    """What one `log` event did to the lines of its stream."""

    continued: Line | None  # the open line it continued (the same object)
    first: int  # the number of texts[0]
    texts: list[str]  # new whole lines
    opened: Line | None  # a new line left open, numbered after the texts


@dataclass(slots=True)
class OpenLine:
    """A line still open: its pieces, joined only when read (LineJoiner, and
    storage/tail.py's reader of a range of lines)."""

    line: Line
    pieces: list[str]  # its text so far, joined only when read
    length: int


@dataclass
class LineJoiner:
    """`log` events -> lines, a line sent in parts completed in place.

    Whole lines stay plain strings (a million-line run makes no object per
    line); only an open line is a `Line`, which its continuations extend.
    Its pieces are joined once, when it completes or is read through
    `open_lines()`: a line sent in thousands of parts is not copied again for
    each. Numbering that breaks (a continuation of another line, lines sent
    twice or skipped) is noted in `problems`, not raised: the server shows
    what its log holds, and tests assert there is none.
    """

    total: int = 0  # highest line number seen
    problems: list[str] = field(default_factory=list)
    _open: dict[str, OpenLine] = field(default_factory=dict)

    def feed(self, data: dict[str, Any]) -> Joined:
        stream: str = data["stream"]
        number: int = data["first"]
        texts: list[str] = data["lines"]
        held = self._open.pop(stream, None)
        continued = held.line if held is not None else None
        if held is not None and continued is not None and texts:
            if number != continued.n:
                self._problem(f"{stream} continues line {number}, but line {continued.n} is open")
            held.pieces.append(texts[0])
            held.length += len(texts[0])
            texts = texts[1:]
            number = continued.n + 1
            if not (data["partial"] and not texts):  # it is complete now
                continued.text = "".join(held.pieces)
                continued.partial = False
                held = None
        if texts and number != self.total + 1:
            self._problem(f"{stream} line {number} after line {self.total}")
        opened = None
        if data["partial"]:
            if texts:
                opened = Line(number + len(texts) - 1, stream, texts[-1], True, data.get("at"))
                texts = texts[:-1]
                self._open[stream] = OpenLine(opened, [opened.text], len(opened.text))
            elif held is not None:
                self._open[stream] = held
        end = number + len(texts) - (0 if opened else 1)
        if end > self.total:
            self.total = end
        return Joined(continued, number, texts, opened)

    @property
    def open_count(self) -> int:
        """How many streams have a line open."""
        return len(self._open)

    def open_length(self, stream: str) -> int:
        """Characters of `stream`'s open line so far (0 when none is open)."""
        held = self._open.get(stream)
        return held.length if held is not None else 0

    def open_lines(self) -> list[Line]:
        """Lines still open (a run still printing), the most recently sent last,
        their text brought up to date."""
        lines = []
        for held in self._open.values():
            if len(held.pieces) > 1:
                held.pieces = ["".join(held.pieces)]
            held.line.text = held.pieces[0]
            lines.append(held.line)
        return lines

    def _problem(self, message: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(message)


class _HasData(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Any: ...


def join_lines(events: Iterable[_HasData], joiner: LineJoiner | None = None) -> list[Line]:
    """Every line of the `log` events, in order (`joiner.problems` tells of gaps)."""
    joiner = joiner or LineJoiner()
    lines: list[Line] = []
    for event in events:
        if event.type != "log":
            continue
        joined = joiner.feed(event.data)
        stream, at = event.data["stream"], event.data.get("at")
        lines.extend(
            Line(joined.first + i, stream, text, at=at) for i, text in enumerate(joined.texts)
        )
        if joined.opened is not None:
            lines.append(joined.opened)
    joiner.open_lines()  # the texts of lines still open, up to date
    return lines
