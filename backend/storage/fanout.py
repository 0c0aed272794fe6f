"""One read of a run's event file shared by all of its subscribers (issue 12).

A run watched by many subscribers is read by each of them (EventLog.follow):
without sharing, 1,000 subscribers woken by the same new event each pread
their own copy of the same bytes, and each copy lives until that
subscriber's socket has taken it. A `Fanout` keeps the spans a log's
followers have read lately, by the offset they start at, so the next
follower at that offset gets the same bytes object instead of a new read.

For the followers to meet at the same offsets, while a log has two or more
of them they read in *steps* whose ends depend on the file only: a step
from `start` ends at the last event that ends at or before the next multiple
of STEP past `start` (at least one event), or at the end of what is written
so far, whichever comes first. Followers that fell behind (their socket was
slow) read whole steps, the same as every other follower that passes there;
followers at the live edge read what was appended since their last step,
the same span as every other follower woken with them. A follower that finds
a span kept at its offset takes it as it is, even when more has been written
past its end since (the rest is its next span): followers at the live edge
then stay on the same spans however the writer's appends interleave with
their wake-ups, instead of each reading a span of its own up to a slightly
later end (with 1,000 followers that was up to 1,000 copies of a span).

A span is dropped once as many followers as the log has have taken it (so
followers that keep together keep next to nothing), and the spans kept are
at most `limit` bytes per log, oldest first out; a follower whose span was
dropped reads its own (and keeps it for the next ones). A log with a single
follower keeps nothing and reads as before (READ_CHUNK at a time).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

STEP = 256 * 1024  # bytes: where followers of a shared log meet (see above)
CACHE_BYTES = 16 << 20  # spans kept per log while it has two followers or more


class Fanout:
    """The spans one event log's followers read lately (loop thread only)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = CACHE_BYTES if limit is None else limit
        self.followers = 0
        self.behind = 0  # followers with more than a step still to read
        self.bytes = 0  # of the spans kept
        self.hits = 0  # reads served from a kept span
        self.reads = 0  # reads of the file while shared
        # start -> [last event id, bytes, how many followers took it]
        self._spans: OrderedDict[int, list[Any]] = OrderedDict()

    @property
    def shared(self) -> bool:
        return self.followers >= 2

    def __len__(self) -> int:
        return len(self._spans)

    def join(self) -> None:
        self.followers += 1

    def leave(self) -> None:
        self.followers -= 1
        if not self.shared:
            self.clear()

    def clear(self) -> None:
        self._spans.clear()
        self.bytes = 0

    def get(self, start: int) -> tuple[int, bytes] | None:
        """(last event id, bytes) of the span kept at `start`, if there is one.
        Once as many followers as there are have taken it, nobody needs it:
        dropped."""
        kept = self._spans.get(start)
        if kept is None:
            return None
        data: bytes = kept[1]
        self.hits += 1
        kept[2] += 1
        if kept[2] >= self.followers:
            del self._spans[start]
            self.bytes -= len(data)
        return kept[0], data

    def put(self, start: int, last: int, data: bytes) -> None:
        """Keep the span at `start` (through event `last`), read by one
        follower; drop the oldest spans past the limit."""
        self.reads += 1
        old = self._spans.pop(start, None)
        if old is not None:
            self.bytes -= len(old[1])
        self._spans[start] = [last, data, 1]
        self.bytes += len(data)
        while self.bytes > self.limit and len(self._spans) > 1:
            _, (_, dropped, _) = self._spans.popitem(last=False)
            self.bytes -= len(dropped)


def step_bytes(start: int) -> int:
    """How many bytes a shared step from `start` may span (up to the next multiple of STEP)."""
    return STEP - start % STEP
