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
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import threading
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..errors import DiskFull
from ..events import EventType, encode_event
from .reader import index_events
from .space import FILE_MODE, DataDirSpace, full_error, is_disk_full, reserve

READ_CHUNK = 1 << 20
RESERVE = 64 * 1024  # preallocated past a live log's end for its `done`
_write = os.write  # (tests replace it to fail a write)


class EventLog:
    def __init__(
        self, path: Path, loop: asyncio.AbstractEventLoop, space: DataDirSpace | None = None
    ) -> None:
        self.path = path
        self._loop = loop
        self._space = space
        self._reserved = False  # RESERVE bytes are preallocated past the end
        self._lock = threading.Lock()
        # _ends[i] is where event i+1 ends (and the next one starts).
        self._ends = array("q")
        self._fd: int | None = None
        self.finished = False
        self._changed = asyncio.Event()
        self._wake_pending = False

    @classmethod
    def load(
        cls, path: Path, loop: asyncio.AbstractEventLoop, space: DataDirSpace | None = None
    ) -> EventLog:
        """Index an existing file (after a restart, or for a finished run)."""
        log = cls(path, loop, space)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return log
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return log
            # mmap: the page cache is scanned in place, no copy of the file.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                pos, last_type = index_events(data, log._ends)
        if pos < size:  # a torn final write from a crash: drop it
            with open(path, "r+b") as torn:
                torn.truncate(pos)
        log.finished = last_type == EventType.DONE.encode()
        return log

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
            self._ends.append(self.size + len(raw))
            if final:
                self.finished = True
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.size)  # releases the rest of the reserve
                self._close()
        self._notify()
        return event_id

    def _claim(self, size: int, final: bool) -> int:
        """Open the file; unless `final`, make sure `size` bytes fit and keep
        RESERVE bytes preallocated past them. The fd to write at the end."""
        if final:  # it goes into the reserve
            return self._open()
        space = self._space
        with space.lock if space is not None else contextlib.nullcontext():
            if space is not None:
                space.check(size + (0 if self._reserved else RESERVE))
            fd = self._open()
            try:
                self._reserved = reserve(fd, self.size, size + RESERVE)
            except OSError as exc:
                raise full_error(exc) from exc
        return fd

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
                    self._reserved = False
                    self._reserved = reserve(fd, end, RESERVE)
            if is_disk_full(exc):
                raise full_error(exc) from exc
            raise
        if self._space is not None:
            self._space.grew(len(raw))

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and delete the file (a run refused before it was accepted)."""
        with self._lock:
            self._close()
            self.finished = True
            if self._space is not None:
                self._space.remove(self.path)
            else:
                self.path.unlink(missing_ok=True)

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
        if event_id <= 1:
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
        """Yield the bytes of every event after id `after`, live, until `done`."""
        cursor = after
        self.path.touch(FILE_MODE, exist_ok=True)  # a subscriber may come before the first event
        with open(self.path, "rb", buffering=0) as f:
            while True:
                waiter = self._changed
                finished = self.finished
                start, end, last = self.span(cursor)
                if end > start:
                    yield os.pread(f.fileno(), end - start, start)
                    cursor = last
                    continue
                if finished:
                    return
                await waiter.wait()


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
