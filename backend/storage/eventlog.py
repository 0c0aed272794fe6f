"""One append-only event log per run, and the global run-change feed.

A run's log is a file of SSE bytes exactly as subscribers receive them, so a
replay is byte-for-byte the live stream. The worker thread appends; asyncio
subscribers are cursors (the last event id they have) that read the file.

A full disk never costs a run its `done`. While a log is live it keeps
RESERVE bytes preallocated past its end (space.reserve: the file's size does
not change, readers see nothing of it), claimed before every other event is
written; an event that cannot claim its room is refused with DiskFull (so is
one that would leave less than min_free_bytes on the filesystem), and the
`done` that follows is written into the reserve, which it then releases.
Where the filesystem cannot preallocate, min_free_bytes alone keeps the room.
The room is claimed in steps (one fallocate per RESERVE_STEP bytes of
output or so, not one per event): an event that would leave less than
RESERVE preallocated past it claims RESERVE + RESERVE_STEP past it, or,
when that does not fit (min_free_bytes, or the filesystem's ENOSPC), just
RESERVE past it as each event did before.

The event index (`<run>.idx` beside `<run>.events`, space.index_path) lets
a finished run be opened, and any of its lines be found, without reading
its file from the start. It is a record of 16 bytes per event, in event
order, little-endian: two unsigned 64-bit words,

    end | kind << 56   where the event ends in the event file (the next
                       starts there); kind 0 log, 1 status, 2 pull,
                       3 notice, 4 done, 5 any other type
    lines              the highest line number begun in this event or
                       before it (0 before the first line): the lines that
                       begin in event i are those numbered lines[i-1]+1 ..
                       lines[i] (a `log` event's lines[0] continues its
                       stream's open line when that was left partial: it
                       begins nothing), so the words never decrease and a
                       line's first event is a bisect away.

`append` writes an event's record after the event itself, with pwrite at
its place (count x 16), best effort: a record that could not be written
(a full disk, even for `done`, which the reserve holds for the event
file only) is written with the next one. A crash of the process leaves the
index behind its file (a power loss may leave either behind the other), so
`load` trusts it thus:
- a missing, malformed or mismatched index (runs of older versions) is
  rebuilt by one full scan of the file;
- records past the file's end are dropped (the file lost a tail);
- an index shorter than the file is completed by scanning only the rest
  (the events written after its last record, a torn final write dropped);
- the first and last records kept are checked against the file (their
  event's id, type and closing blank line);
and writes what it completed when the run is finished (an unfinished run's
next append writes it). The index counts in the data dir's use, and goes
with its event file (DataDirSpace.remove).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import re
import struct
import sys
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import DiskFull
from ..events import EventType, encode_event
from .fanout import STEP, Fanout, step_bytes
from .reader import lines_begun, scan_events
from .space import FILE_MODE, DataDirSpace, full_error, index_path, is_disk_full, reserve

READ_CHUNK = 1 << 20
RESERVE = 64 * 1024  # preallocated past a live log's end for its `done`
RESERVE_STEP = 64 * 1024  # claimed beyond that at once (module docstring)
_write = os.write  # (tests replace it to fail a write)
_pwrite = os.pwrite  # (the index's; tests replace it too)

# The event index (module docstring).
RECORD = struct.Struct("<QQ")
KIND_LOG, KIND_STATUS, KIND_PULL, KIND_NOTICE, KIND_DONE, KIND_OTHER = range(6)
KINDS = {"log": KIND_LOG, "status": KIND_STATUS, "pull": KIND_PULL}
KINDS.update(notice=KIND_NOTICE, done=KIND_DONE)
_KIND_OF_TYPE = {name.encode(): kind for name, kind in KINDS.items()}
_KIND_SHIFT = 56
_END_MASK = (1 << 48) - 1
_NOT_LOG = re.compile(rb"[^\x00]")
_VALID_KINDS = bytes(range(KIND_OTHER + 1))


class Index(NamedTuple):
    """A reader's view of a log's index, as of `count` events (the arrays
    may grow past it meanwhile; nothing below it changes)."""

    events: int  # how many
    ends: array[int]  # ends[i]: where event i+1 ends
    lines: array[int]  # lines[i]: the highest line number begun through event i+1
    marks: array[int]  # the positions (event id - 1) of the events that are not `log`

    def start(self, position: int) -> int:
        """Where the event at `position` (its id - 1) starts."""
        return self.ends[position - 1] if position > 0 else 0

    @property
    def total_lines(self) -> int:
        return self.lines[self.events - 1] if self.events else 0

    def beginning(self, n: int) -> int:
        """The position of the event in which line `n` begins (`count` when
        none does)."""
        return bisect_left(self.lines, n, 0, self.events)

    def non_log(self) -> list[int]:
        """The positions of the events that are not `log`."""
        marks = self.marks
        return list(marks[: bisect_left(marks, self.events)])


class EventLog:
    def __init__(
        self, path: Path, loop: asyncio.AbstractEventLoop, space: DataDirSpace | None = None
    ) -> None:
        self.path = path
        self._loop = loop
        self._space = space
        self._reserved_to = 0  # the file is preallocated up to here (past its end)
        self._can_reserve = True  # until space.reserve says this filesystem cannot
        self._lock = threading.Lock()
        # _ends[i] is where event i+1 ends (and the next one starts).
        self._ends = array("q")
        # The rest of the index (module docstring), in memory: the highest
        # line number begun through event i+1, and where the non-`log`
        # events are (and their kinds).
        self._lines = array("q")
        self._marks = array("q")
        self._mark_kinds = array("B")
        self._fd: int | None = None
        self._fanout = Fanout()  # what its followers read lately (loop thread only)
        self._index_fd: int | None = None
        self._indexed = 0  # records written to the index file
        self._index_size = 0  # its size, as far as known
        self.finished = False
        self._changed = asyncio.Event()
        self._wake_pending = False

    @classmethod
    def load(
        cls, path: Path, loop: asyncio.AbstractEventLoop, space: DataDirSpace | None = None
    ) -> EventLog:
        """Open an existing file (after a restart, or for a finished run)
        through its index, completed or rebuilt as the module docstring says."""
        log = cls(path, loop, space)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return log
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return log
            log._read_index(f.fileno(), size)
            pos = log.size
            if pos < size:
                # mmap: the page cache is scanned in place, no copy of the file.
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    pos, entries = scan_events(data, pos, log.total_lines)
                for end, kind, lines in entries:
                    log._add(end, _KIND_OF_TYPE.get(kind, KIND_OTHER), lines)
        if pos < size:  # a torn final write from a crash: drop it
            with open(path, "r+b") as torn:
                torn.truncate(pos)
        log.finished = bool(log._marks) and log._mark_kinds[-1] == KIND_DONE
        log.finished = log.finished and log._marks[-1] == len(log._ends) - 1
        if log.finished and log._indexed < len(log._ends):
            with log._lock:
                log._write_index()
                log._close()
        return log

    def _read_index(self, fd: int, size: int) -> None:
        """Take the records of the index file that the event file bears out."""
        try:
            with open(index_path(self.path), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        self._index_size = len(raw)
        n = len(raw) // RECORD.size
        raw = raw[: n * RECORD.size]
        kinds = raw[7 :: RECORD.size]
        if not n or kinds.translate(None, _VALID_KINDS) or raw[6 :: RECORD.size].count(0) != n:
            return  # empty, or not an index of ours: rebuilt
        words = array("q")
        words.frombytes(raw)
        if sys.byteorder != "little":
            words.byteswap()
        ends, lines = words[0::2], words[1::2]
        marks, mark_kinds = array("q"), array("B")
        for match in _NOT_LOG.finditer(kinds):
            i = match.start()
            marks.append(i)
            mark_kinds.append(kinds[i])
            ends[i] &= _END_MASK
        while n and ends[n - 1] > size:  # past the file's end: dropped
            n -= 1
        if n < len(ends):
            del ends[n:], lines[n:]
            cut = bisect_left(marks, n)
            del marks[cut:], mark_kinds[cut:]
        if not n or not all(_bears_out(fd, ends, marks, mark_kinds, i) for i in {0, n - 1}):
            return
        self._ends, self._lines, self._marks, self._mark_kinds = ends, lines, marks, mark_kinds
        self._indexed = n

    @property
    def total_lines(self) -> int:
        """The highest line number begun so far."""
        return self._lines[-1] if self._lines else 0

    def index(self) -> Index:
        """The index as of now, for readers (any thread)."""
        return Index(len(self._ends), self._ends, self._lines, self._marks)

    def _add(self, end: int, kind: int, lines: int) -> None:
        """One event more in the index (`_ends` last: readers go by its length)."""
        if kind != KIND_LOG:
            self._marks.append(len(self._ends))
            self._mark_kinds.append(kind)
        self._lines.append(lines)
        self._ends.append(end)

    def _record(self, position: int) -> bytes:
        kind = KIND_LOG
        at = bisect_left(self._marks, position)
        if at < len(self._marks) and self._marks[at] == position:
            kind = self._mark_kinds[at]
        return RECORD.pack(self._ends[position] | kind << _KIND_SHIFT, self._lines[position])

    def _write_index(self) -> None:
        """Write the records the index file lacks, best effort (under `_lock`)."""
        count = len(self._ends)
        if self._indexed >= count:
            return
        offset = self._indexed * RECORD.size
        raw = b"".join(self._record(i) for i in range(self._indexed, count))
        try:
            if self._index_fd is None:
                self._index_fd = os.open(index_path(self.path), os.O_WRONLY | os.O_CREAT, FILE_MODE)
            if self._index_size > offset:  # a torn record, or ones the file bore out no more
                os.ftruncate(self._index_fd, offset)
                if self._space is not None:
                    self._space.grew(offset - self._index_size, 0, index_path(self.path))
                self._index_size = offset
            written = _pwrite(self._index_fd, raw, offset)
        except OSError:
            return  # written with the next event's, or completed by `load`
        self._indexed += written // RECORD.size
        grown = offset + written - self._index_size
        if grown > 0:
            self._index_size += grown
            if self._space is not None:
                self._space.grew(grown, 0, index_path(self.path))

    @property
    def last_id(self) -> int:
        return len(self._ends)

    @property
    def size(self) -> int:
        """Bytes of whole events written."""
        return self._ends[-1] if self._ends else 0

    def append(self, event_type: str, data: Any) -> int:
        """Encode and store one event; safe to call from any thread.

        DiskFull when the data dir has no room for it; the log is unchanged
        then, and can still take its `done`.
        """
        with self._lock:
            if self.finished:
                raise RuntimeError(f"event log {self.path.name} is finished")
            event_id = len(self._ends) + 1
            raw = encode_event(event_id, event_type, data)
            final = event_type == EventType.DONE
            kind = KINDS.get(event_type, KIND_OTHER)
            lines = lines_begun(data, self.total_lines) if kind == KIND_LOG else self.total_lines
            try:
                fd = self._claim(len(raw), final)
                self._write_at(fd, raw)
            except DiskFull:
                if final:
                    # Not even `done` fits (no reserve on this filesystem, and
                    # the room is gone): end the followers rather than keep
                    # them waiting for ever.
                    self.finished = True
                    self._close()
                    self._notify()
                raise
            self._add(self.size + len(raw), kind, lines)
            self._write_index()
            if final:
                self.finished = True
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.size)  # releases the rest of the reserve
                self._close()
        self._notify()
        return event_id

    def _claim(self, size: int, final: bool) -> int:
        """Open the file; unless `final`, make sure `size` bytes fit and keep
        RESERVE bytes (at least) preallocated past them, claimed in steps
        (module docstring). The fd to write at the end."""
        if final:  # it goes into the reserve
            return self._open()
        space = self._space
        start = self.size
        end = start + size
        with space.lock if space is not None else contextlib.nullcontext():
            # What the event takes that is not preallocated yet: as before,
            # the event itself, and RESERVE more unless that is there already.
            need = size + RECORD.size + (0 if self._reserved_to >= start + RESERVE else RESERVE)
            if self._reserved_to >= end + RESERVE or not self._can_reserve:
                if space is not None:
                    space.check(need)
                return self._open()
            fd = self._open()
            try:
                try:  # a step: RESERVE_STEP more, when it fits
                    if space is not None:
                        space.check(need + RESERVE_STEP)
                    self._reserve(fd, start, size + RESERVE + RESERVE_STEP)
                except (DiskFull, OSError) as exc:
                    if isinstance(exc, OSError) and not is_disk_full(exc):
                        raise
                    if space is not None:  # near the limit: just this event's room
                        space.check(need)
                    self._reserve(fd, start, size + RESERVE)
            except OSError as exc:
                raise full_error(exc) from exc
        return fd

    def _reserve(self, fd: int, offset: int, length: int) -> None:
        """space.reserve, noting how far the file is preallocated now."""
        if reserve(fd, offset, length):
            self._reserved_to = max(self._reserved_to, offset + length)
        else:
            self._can_reserve = False  # (min_free_bytes alone keeps the room)

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            except OSError as exc:
                if is_disk_full(exc):
                    raise full_error(exc) from exc
                raise
        return self._fd

    def _write_at(self, fd: int, raw: bytes) -> None:
        """Write all of `raw` at the end; on failure take back any part written."""
        end = self.size
        view = memoryview(raw)
        written = 0
        try:
            while written < len(raw):
                written += _write(fd, view[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                if written or os.fstat(fd).st_size > end:
                    os.ftruncate(fd, end)  # (this also drops the reserve: take it back)
                    self._reserved_to = 0
                    self._reserve(fd, end, RESERVE)
            if is_disk_full(exc):
                raise full_error(exc) from exc
            raise
        if self._space is not None:
            self._space.grew(len(raw), path=self.path)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._index_fd is not None:
            os.close(self._index_fd)
            self._index_fd = None

    def discard(self) -> None:
        """Close and delete the file (a run refused before it was accepted)."""
        with self._lock:
            self._close()
            self.finished = True
            if self._space is not None:
                self._space.remove(self.path)
            else:
                self.path.unlink(missing_ok=True)
                index_path(self.path).unlink(missing_ok=True)

    def _notify(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed: nobody is listening any more
            self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        with self._lock:
            self._close()

    def offset(self, event_id: int) -> int:
        """Where event `event_id` starts in the file (the end, past the last)."""
        if event_id <= 1 or not self._ends:  # (an id past the end of an empty log too)
            return 0
        return self._ends[min(event_id, len(self._ends) + 1) - 2]

    def span(self, after: int, max_bytes: int = READ_CHUNK) -> tuple[int, int, int]:
        """(start, end, last_id) of the whole events after id `after`, ~max_bytes.

        Bounded by `_ends`, which the writer extends only after its write, so a
        reader never sees half an event.
        """
        ends = self._ends
        count = len(ends)
        if after >= count:
            return (0, 0, after)
        start = ends[after - 1] if after > 0 else 0
        last = count
        if ends[count - 1] - start > max_bytes:
            last = max(bisect_right(ends, start + max_bytes, after, count), after + 1)
        return (start, ends[last - 1], last)

    async def follow(self, after: int = 0) -> AsyncIterator[bytes]:
        """Yield the bytes of every event after id `after`, live, until `done`.

        Followers of one log share their reads while there are two or more
        (backend/storage/fanout.py).
        """
        cursor = after
        self.path.touch(FILE_MODE, exist_ok=True)  # a subscriber may come before the first event
        fanout = self._fanout
        with open(self.path, "rb", buffering=0) as f:
            fanout.join()
            behind = False  # more than a step to read: catching up
            try:
                while True:
                    waiter = self._changed
                    finished = self.finished
                    now_behind = self.size - self.offset(cursor + 1) > STEP
                    if now_behind != behind:
                        behind = now_behind
                        fanout.behind += 1 if behind else -1
                    if not fanout.shared or (behind and fanout.behind < 2):
                        start, end, last = self.span(cursor)
                        if end > start:
                            yield os.pread(f.fileno(), end - start, start)
                            cursor = last
                            continue
                    else:
                        start = self.offset(cursor + 1)
                        kept = fanout.get(start)
                        if kept is not None:
                            # What another follower read from here, even if more
                            # has been written since: the rest is the next span.
                            last, data = kept
                            yield data
                            cursor = last
                            continue
                        start, end, last = self.span(cursor, step_bytes(start))
                        if end > start:
                            data = os.pread(f.fileno(), end - start, start)
                            fanout.put(start, last, data)
                            yield data
                            cursor = last
                            continue
                    if finished:
                        return
                    await waiter.wait()
            finally:
                if behind:
                    fanout.behind -= 1
                fanout.leave()


def _bears_out(fd: int, ends: array[int], marks: array[int], kinds: array[int], i: int) -> bool:
    """Whether event i+1 of the file is where and what index record i says."""
    start = ends[i - 1] if i > 0 else 0
    end = ends[i]
    if end - start < 4:
        return False
    head = os.pread(fd, min(end - start, 96), start)
    at = bisect_left(marks, i)
    kind = kinds[at] if at < len(marks) and marks[at] == i else KIND_LOG
    id_line, _, rest = head.partition(b"\n")
    type_line = rest.partition(b"\n")[0]
    if id_line != b"id: %d" % (i + 1) or not type_line.startswith(b"event: "):
        return False
    if _KIND_OF_TYPE.get(type_line[7:], KIND_OTHER) != kind:
        return False
    return os.pread(fd, 2, end - 2) == b"\n\n"


class RunFeed:
    """`GET /api/events`: run-change events with ids of their own, last 10,000 kept.

    Ids are `<boot>-<n>` so an id from before a restart is recognised as stale
    (the subscriber gets `reset` and refetches the list).
    """

    def __init__(self, boot: str, keep: int = 10_000) -> None:
        self.boot = boot
        self._events: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self._seq = 0
        self._changed = asyncio.Event()
        self.closed = False

    def publish(self, run: dict[str, Any], event_type: str = EventType.RUN) -> None:
        """Loop thread only (the runner hops here with call_soon_threadsafe)."""
        self._seq += 1
        raw = encode_event(f"{self.boot}-{self._seq}", event_type, run)
        self._events.append((self._seq, raw))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    def _start_after(self, last_event_id: str | None) -> int | None:
        """Sequence to resume after, or None when a reset is needed."""
        if last_event_id is None:
            return self._seq
        boot, _, seq = last_event_id.rpartition("-")
        if boot != self.boot or not (seq.isascii() and seq.isdigit()):
            return None
        n = int(seq)
        oldest = self._events[0][0] if self._events else self._seq + 1
        if n > self._seq or n < oldest - 1:
            return None
        return n

    async def follow(self, last_event_id: str | None) -> AsyncIterator[bytes]:
        cursor = self._start_after(last_event_id)
        if cursor is None:
            cursor = self._seq
            yield encode_event(f"{self.boot}-{cursor}", EventType.RESET, {"reason": "history lost"})
        while not self.closed:
            waiter = self._changed
            if self._events and self._events[-1][0] > cursor:
                oldest = self._events[0][0]
                if cursor < oldest - 1:  # fell behind the ring: start over
                    cursor = self._seq
                    yield encode_event(
                        f"{self.boot}-{cursor}", EventType.RESET, {"reason": "fell behind"}
                    )
                    continue
                start = cursor - oldest + 1
                chunk = [raw for _, raw in list(self._events)[start:]]
                cursor = self._events[-1][0]
                yield b"".join(chunk)
                continue
            await waiter.wait()


class Subscribers:
    """Counts open streams (GET /api/stats), so a leak is visible from outside."""

    def __init__(self) -> None:
        self.open = 0

    async def track(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self.open += 1
        try:
            async for chunk in source:
                yield chunk
        finally:
            self.open -= 1
