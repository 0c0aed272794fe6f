"""A run's log lines by number, read through its event index, never from the start.

The event index (storage/eventlog.py) says, per event, where it ends and the
highest line number begun through it: the lines that begin in event i are
those numbered lines[i-1]+1 .. lines[i]. So line n's first event is a bisect
away, and a `log` event's lines[0] continues an earlier line exactly when its
number was begun before (`first <= lines[i-1]`): no joiner state from the
start of the file is needed to join the lines of a range.

`read_lines` reads forward from the event where the first line of a range
begins until every line of the range has begun and none is open any more
(a line still open at the end is `partial`, as in a replay). `newest_lines`
picks the newest lines below a number, within a character budget, reading
back from there in growing windows of bytes, so the bytes read are about
those of the lines returned (plus, for a line left open, those written
while it was open). Each line is cut at `line_chars` characters, as the
run page's snapshot cuts it.

What is read is decoded once and no more than needed (issue 12): events are
cut where the index says they end and their JSON is read in place, and of
the (up to 5,000-line) `log` event where a range begins only the texts from
about its first line on are decoded (`_cut_log`).
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import orjson

from .eventlog import Index
from .reader import Event, Line, OpenLine, decode_events

READ_CHUNK = 1 << 20  # bytes of whole events read at a time (one event at least)
FOLLOW_CHUNK = 1 << 16  # the first read past the range's events (a line still open); x4 each
WINDOW = 1 << 20  # the first window read back for the newest lines; x4 each time
_TEXT = attrgetter("text")
CUT_BYTES = 1 << 14  # a `log` event's data past this is decoded from the first line asked for
# The members of a `log` event's data around its lines, in the relay's order
# (_cut_log cuts an event only when they are exactly these); _PLAIN: a string
# without a quote, a backslash or a control character.
_PLAIN = rb'"([ !#-\[\]-~]*)"'
_LOG_HEAD = re.compile(
    rb'\{"stream":%s(?:,"at":(?:%s|null))?,"first":(0|[1-9][0-9]*),"lines":\[' % (_PLAIN, _PLAIN)
)
_LOG_TAIL = re.compile(rb',"partial":(true|false)(?:,"eol":(?:true|false))?\}')


def _cut_log(raw: bytes, start: int, end: int, lo: int, begun: int) -> dict[str, Any] | None:
    """The data (JSON in raw[start:end]) of the `log` event in which line `lo`
    begins (`begun`: its index word) with only the texts from about `lo` on
    decoded: those before are None. None when it is not in the relay's form.

    Its texts are numbered first..begun (`lo` begins in it, after all begun
    before: begun = first + count - 1). The lines array lies between the
    members before it and after it, matched exactly (no string among them
    can hide a quote or a bracket). The texts are cut at a `","` where the
    quote closes one (it is preceded by no backslash, comma, bracket or
    space: a quote so placed in an array of strings closes one), found at a
    guess from the texts' mean size; how many were skipped is known from
    how many are left."""
    head = _LOG_HEAD.match(raw, start, end)
    if head is None or head.end() >= end:
        return None
    close = raw.rfind(b'"]', head.end(), end)
    last = _LOG_TAIL.fullmatch(raw, close + 2, end) if close > 0 else None
    if last is None:
        return None
    first = int(head[3])
    want = lo - first  # texts before line `lo`: those that may be skipped
    count = begun - first + 1
    if want < 1 or count <= want:
        return None
    mean = (close + 2 - head.end()) / count
    guess = head.end() + int(mean * (want - 1 - want // 16))
    cut = raw.find(b'","', max(guess, head.end() + 1), close)
    if cut < 0 or raw[cut - 1] in b" \t\n\r,[\\":
        return None
    try:
        texts: list[str | None] = orjson.loads(b"[" + raw[cut + 2 : close + 2])
    except orjson.JSONDecodeError:
        return None
    skipped = count - len(texts)
    if not 0 < skipped <= want:
        return None
    at = head[2]
    return {
        "stream": head[1].decode(),
        "at": at.decode() if at is not None else None,
        "first": first,
        "lines": [None] * skipped + texts,
        "partial": last[1] == b"true",
    }


def _read_span(fd: int, index: Index, first: int, last: int, lo: int = 0) -> Iterator[Event]:
    """The events at positions `first`..`last` - 1, read at once and cut where
    the index says each ends: no search for their blank lines, no copy of
    their bytes (orjson reads the data in place). An event not in our own
    three-line form (reader.parse_event's fast path) is read by decode_events.
    `lo`: the first line wanted, which begins in the first event; a large
    `log` event's texts before it are not decoded (_cut_log)."""
    ends = index.ends
    base = index.start(first)
    raw = os.pread(fd, ends[last - 1] - base, base)
    view = memoryview(raw)
    a = 0
    for position in range(first, last):
        b = ends[position] - base
        event = None
        if raw.startswith(b"id: ", a) and raw.endswith(b"\n\n", a, b):
            head = raw.find(b"\ndata: ", a, min(b, a + 256))  # (id and type are short)
            kind = raw.find(b"\nevent: ", a, head) if head > 0 else -1
            if (
                kind > 0
                and raw.find(b"\n", a, kind) < 0
                and raw.find(b"\n", kind + 8, head) < 0
                and raw.find(b"\n", head + 7, b - 2) < 0
                and raw.find(b"\r", a, b) < 0
            ):
                kind_name = raw[kind + 8 : head].decode()
                data = None
                if lo and position == first and kind_name == "log" and b - a > CUT_BYTES:
                    data = _cut_log(raw, head + 7, b - 2, lo, index.lines[position])
                if data is None:
                    data = orjson.loads(view[head + 7 : b - 2])
                event = Event(raw[a + 4 : kind].decode(), kind_name, data)
        if event is not None:
            yield event
        else:
            yield from decode_events(raw[a:b])
        a = b
    view.release()


def read_events_at(fd: int, index: Index, positions: Iterable[int]) -> Iterator[Event]:
    """The events at `positions` (ids - 1, ascending), contiguous ones read together."""
    run: list[int] = []
    for position in [*positions, -1]:
        if run and position == run[-1] + 1:
            run.append(position)
            continue
        if run:
            yield from _read_span(fd, index, run[0], run[-1] + 1)
        run = [position]


def _events_from(fd: int, index: Index, position: int, until: int, lo: int) -> Iterator[Event]:
    """The events from `position` (id - 1, where line `lo` begins) on:
    through `until` (exclusive) READ_CHUNK at a time, then (for lines still
    open) in reads that start small and grow to READ_CHUNK, to the index's last."""
    count, ends = index.events, index.ends
    step = FOLLOW_CHUNK
    while position < count:
        start = index.start(position)
        if position < until:
            bound = min(start + READ_CHUNK, ends[until - 1])
        else:
            bound, step = start + step, min(step * 4, READ_CHUNK)
        last = max(bisect_right(ends, bound, position, count), position + 1)
        yield from _read_span(fd, index, position, last, lo)
        position, lo = last, 0


def read_lines(fd: int, index: Index, lo: int, hi: int, line_chars: int) -> list[Line]:
    """Lines `lo`..`hi` (within those begun), oldest first, each whole (or
    as far as written: `partial`) and cut at `line_chars` characters."""
    hi = min(hi, index.total_lines)
    if lo > hi:
        return []
    out: list[Line] = []  # in the order they begin: by number
    held: dict[int, OpenLine] = {}
    lines = index.lines
    until = index.beginning(hi) + 1  # the lines of the range begin before it
    for event in _events_from(fd, index, index.beginning(lo), until, lo):
        position = event.number - 1
        if event.type == "log":
            data = event.data
            texts: list[str] = data["lines"]
            first: int = data["first"]
            partial: bool = data["partial"]
            skip = 0
            if texts and first <= (lines[position - 1] if position > 0 else 0):
                skip = 1  # lines[0] continues a line begun earlier
                piece = held.get(first)
                if piece is not None:
                    room = line_chars - piece.length
                    if room > 0 and texts[0]:
                        text = texts[0][:room]
                        piece.pieces.append(text)
                        piece.length += len(text)
                    if not (partial and len(texts) == 1):  # it is complete now
                        del held[first]
                        piece.line.text = "".join(piece.pieces)
                        piece.line.partial = False
            count = len(texts)
            a, b = max(skip, lo - first), min(count, hi - first + 1)
            if a < b:
                stream: str = data["stream"]
                at = data.get("at")
                opened = partial and b == count  # its last line is left open
                whole = texts[a : b - opened]
                if whole and max(map(len, whole)) > line_chars:
                    whole = [text[:line_chars] for text in whole]
                out.extend(  # (map: no Python loop per line)
                    map(
                        Line,
                        range(first + a, first + a + len(whole)),
                        repeat(stream),
                        whole,
                        repeat(False),
                        repeat(at),
                    )
                )
                if opened:
                    text = texts[b - 1][:line_chars]
                    line = Line(first + b - 1, stream, text, True, at)
                    held[line.n] = OpenLine(line, [text], len(text))
                    out.append(line)
        if lines[position] >= hi and not held:
            break
    for piece in held.values():  # still open at the end
        piece.line.text = "".join(piece.pieces)
    return out


def page_lines(lines: Sequence[Line], budget: int) -> list[Line]:
    """The newest lines whose texts add up to `budget` characters (the newest
    line at least)."""
    if sum(map(len, map(_TEXT, lines))) <= budget:  # (the usual case, at C speed)
        return list(lines)
    kept: list[Line] = []
    for line in reversed(lines):
        budget -= len(line.text)
        if budget < 0 and kept:
            break
        kept.append(line)
    kept.reverse()
    return kept


def newest_lines(
    fd: int, index: Index, before: int, limit: int, line_chars: int, budget: int
) -> list[Line]:
    """The newest `limit` lines numbered below `before`, oldest first, whose
    texts add up to `budget` characters at most (the newest line at least),
    each cut at `line_chars`."""
    hi = min(before - 1, index.total_lines)
    if hi < 1 or limit < 1:
        return []
    lo = max(1, hi - limit + 1)
    ends, lines = index.ends, index.lines
    anchor = ends[index.beginning(hi)]  # the end of the event where line `hi` begins
    window = WINDOW
    while True:
        # The lines that begin in the last `window` bytes up to the anchor.
        start = bisect_right(ends, anchor - window, 0, index.events)
        tried = min(hi, max(lo, lines[start - 1] + 1 if start > 0 else 1))
        got = read_lines(fd, index, tried, hi, line_chars)
        if tried == lo or sum(map(len, map(_TEXT, got))) > budget:
            return page_lines(got, budget)
        window *= 4
