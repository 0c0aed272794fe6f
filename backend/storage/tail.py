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
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

from .eventlog import Index
from .reader import Event, Line, decode_events

READ_CHUNK = 1 << 20  # bytes of whole events read at a time (one event at least)
FOLLOW_CHUNK = 1 << 16  # the first read past the range's events (a line still open); x4 each
WINDOW = 1 << 20  # the first window read back for the newest lines; x4 each time
_TEXT = attrgetter("text")


@dataclass(slots=True)
class _Open:
    """A line of the range still open: its pieces, joined once at the end."""

    line: Line
    pieces: list[str]
    length: int


def read_events_at(fd: int, index: Index, positions: Iterable[int]) -> Iterator[Event]:
    """The events at `positions` (ids - 1, ascending), contiguous ones read together."""
    run: list[int] = []
    for position in [*positions, -1]:
        if run and position == run[-1] + 1:
            run.append(position)
            continue
        if run:
            start = index.start(run[0])
            yield from decode_events(os.pread(fd, index.ends[run[-1]] - start, start))
        run = [position]


def _events_from(fd: int, index: Index, position: int, until: int) -> Iterator[Event]:
    """The events from `position` (id - 1) on: through `until` (exclusive)
    READ_CHUNK at a time, then (for lines still open) in reads that start
    small and grow to READ_CHUNK, to the index's last."""
    count, ends = index.events, index.ends
    step = FOLLOW_CHUNK
    while position < count:
        start = index.start(position)
        if position < until:
            bound = min(start + READ_CHUNK, ends[until - 1])
        else:
            bound, step = start + step, min(step * 4, READ_CHUNK)
        last = max(bisect_right(ends, bound, position, count), position + 1)
        yield from decode_events(os.pread(fd, ends[last - 1] - start, start))
        position = last


def read_lines(fd: int, index: Index, lo: int, hi: int, line_chars: int) -> list[Line]:
    """Lines `lo`..`hi` (within those begun), oldest first, each whole (or
    as far as written: `partial`) and cut at `line_chars` characters."""
    hi = min(hi, index.total_lines)
    if lo > hi:
        return []
    out: list[Line] = []  # in the order they begin: by number
    held: dict[int, _Open] = {}
    lines = index.lines
    until = index.beginning(hi) + 1  # the lines of the range begin before it
    for event in _events_from(fd, index, index.beginning(lo), until):
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
                out.extend(
                    [
                        Line(
                            first + k,
                            stream,
                            t if len(t) <= line_chars else t[:line_chars],
                            False,
                            at,
                        )
                        for k, t in enumerate(texts[a : b - opened], a)
                    ]
                )
                if opened:
                    text = texts[b - 1][:line_chars]
                    line = Line(first + b - 1, stream, text, True, at)
                    held[line.n] = _Open(line, [text], len(text))
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
