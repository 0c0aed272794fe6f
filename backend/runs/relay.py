"""A running container's output -> `log` events, bounded by max_log_bytes.

Reads the attach stream (poll with the partial-line deadline as timeout),
reassembles lines across frames and appends them as `log` events; past
`max_log_bytes` lines are counted but neither streamed nor kept. Each event's
`at` is when its first line was read: the clock is read once per chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..engines import OutputStream
from ..engines.frames import STDERR, FrameDecoder
from ..events import EventType, rfc3339_at
from ..settings import Settings
from ..storage.eventlog import EventLog
from .lines import LineAssembler, LogBatch

MAX_LINES_PER_EVENT = 5000


@dataclass(frozen=True)
class OutputCounts:
    lines: int
    bytes: int  # raw bytes the container printed
    dropped_lines: int
    dropped_bytes: int  # UTF-8 size of the dropped lines, one byte per line end


def _text_bytes(lines: list[str], partial: bool) -> int:
    """UTF-8 size of `lines` with a newline after each terminated one."""
    if not lines:
        return 0
    return len("\n".join(lines).encode()) + (0 if partial else 1)


def stream_pieces(chunk: bytes, frames: FrameDecoder, tty: bool) -> list[tuple[str, bytes]]:
    """(stream name, bytes) of a chunk of an attach or logs stream."""
    if tty:
        return [("tty", chunk)]
    return [("stderr" if sid == STDERR else "stdout", data) for sid, data in frames.feed(chunk)]


class OutputRelay:
    def __init__(self, events: EventLog, settings: Settings) -> None:
        self.events = events
        self.settings = settings
        self._raw_bytes = 0
        self._kept_bytes = 0
        self._kept_through = 0  # highest line number streamed
        self._dropping = False
        self._dropped_bytes = 0
        self._assembler: LineAssembler | None = None
        self._at: tuple[float, str] = (0.0, "")  # the last `at` formatted

    def run(self, output: OutputStream, *, tty: bool) -> OutputCounts:
        """Relay until the stream ends; flush the last, unterminated lines."""
        assembler = self._start()
        frames = FrameDecoder()
        while True:
            deadline = assembler.next_deadline()
            timeout = None if deadline is None else deadline - time.monotonic()
            chunk = output.read(timeout)
            now = time.monotonic()
            wall = time.time()
            if chunk is None:
                self._emit(assembler.flush_due(now))
                continue
            if not chunk:
                break
            batches: list[LogBatch] = []
            for name, payload in stream_pieces(chunk, frames, tty):
                self._raw_bytes += len(payload)
                payload = self._new_bytes(name, payload)
                if payload:
                    batches.extend(assembler.feed(name, payload, now, wall))
            batches.extend(assembler.flush_due(now))
            self._emit(batches)
        self._end(assembler)
        self._emit(assembler.finish())
        return self.counts

    # Hooks of a relay that goes on from a run's log (runs/reattach.py).

    def _start(self) -> LineAssembler:
        self._assembler = LineAssembler(self.settings.partial_line_delay)
        return self._assembler

    def _new_bytes(self, stream: str, data: bytes) -> bytes:
        """What of a stream's bytes is new (all of it here)."""
        return data

    def _end(self, assembler: LineAssembler) -> None:
        """The stream ended: before the last lines are flushed."""

    @property
    def counts(self) -> OutputCounts:
        """So far; lines counted but never written (the disk was full) count as dropped."""
        lines = self._assembler.line_count if self._assembler else 0
        return OutputCounts(
            lines=lines,
            bytes=self._raw_bytes,
            dropped_lines=lines - self._kept_through,
            dropped_bytes=self._dropped_bytes,
        )

    def _time(self, at: float | None) -> str:
        """RFC 3339 (milliseconds) of a batch's `at` (None: now); the batches
        of one chunk share it, so it is formatted once."""
        if at is None:
            at = time.time()
        if at != self._at[0]:
            self._at = (at, rfc3339_at(at))
        return self._at[1]

    def _emit(self, batches: list[LogBatch]) -> None:
        for batch in batches:
            if self._dropping:
                self._dropped_bytes += _text_bytes(batch.lines, batch.partial)
                continue
            size = _text_bytes(batch.lines, batch.partial)
            if self._kept_bytes + size > self.settings.max_log_bytes:
                batch = self._start_dropping(batch)
                size = _text_bytes(batch.lines, batch.partial)
                if not batch.lines:
                    continue
            self._kept_bytes += size
            lines = batch.lines
            at = self._time(batch.at)
            for start in range(0, len(lines), MAX_LINES_PER_EVENT):
                part = lines[start : start + MAX_LINES_PER_EVENT]
                more = start + MAX_LINES_PER_EVENT < len(lines)
                self.events.append(
                    EventType.LOG,
                    {
                        "stream": batch.stream,
                        "at": at,
                        "first": batch.first + start,
                        "lines": part,
                        "partial": batch.partial and not more,
                        # the output ended without a line end (printf 'a'):
                        **({"eol": False} if not batch.eol and not more else {}),
                    },
                )
            self._kept_through = max(self._kept_through, batch.first + len(lines) - 1)

    def _start_dropping(self, batch: LogBatch) -> LogBatch:
        """Keep the whole lines of `batch` that fit under max_log_bytes; drop the rest."""
        limit = self.settings.max_log_bytes
        self._dropping = True
        self.events.append(
            EventType.NOTICE,
            {
                "message": f"output past max_log_bytes ({limit} bytes) is being dropped: "
                "further lines are counted but neither streamed nor kept"
            },
        )
        room = limit - self._kept_bytes
        keep = 0
        for line in batch.lines:
            room -= len(line.encode()) + 1
            if room < 0:
                break
            keep += 1
        self._dropped_bytes += _text_bytes(batch.lines[keep:], batch.partial)
        return LogBatch(batch.stream, batch.first, batch.lines[:keep], False, batch.at)
