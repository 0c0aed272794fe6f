"""Raw output bytes -> complete UTF-8 lines, per stream, numbered per run.

Rules (docs/api.md, `log` event): LF ends a line, so does CRLF (the CR is
dropped); any other CR stays inside the line. Invalid UTF-8 becomes U+FFFD.
Text that has waited `partial_delay` seconds without a newline is emitted as
a *partial* line; the next batch of that stream continues it under the same
line number.

Each batch carries `at`, the wall-clock time (seconds since the epoch) its
first line's text was read: the `wall` time of the `feed` that brought its
first piece (the relay reads the clock once per chunk, not per line).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

STREAM_NAMES = ("stdout", "stderr", "tty")


@dataclass(slots=True)
class LogBatch:
    stream: str
    first: int
    lines: list[str]
    partial: bool
    # When its first line's text was read (time.time()); None: not known (now).
    at: float | None = field(default=None, compare=False)
    # False: the output ended here without a line end (only from `finish`).
    eol: bool = field(default=True, compare=False)


@dataclass(slots=True)
class _StreamState:
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    text: str = ""  # text of the current line not yet emitted
    open_number: int | None = None  # number of a line already emitted as partial
    waiting_since: float | None = None
    text_at: float | None = None  # wall time the first of `text` was read


class LineAssembler:
    def __init__(self, partial_delay: float = 0.25) -> None:
        self.partial_delay = partial_delay
        self._streams: dict[str, _StreamState] = {}
        self._next = 1

    @property
    def line_count(self) -> int:
        return self._next - 1

    def _state(self, stream: str) -> _StreamState:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _StreamState()
        return state

    def _number(self, state: _StreamState, count: int) -> int:
        """First line number for `count` lines, the first of which may continue."""
        if state.open_number is not None:
            first = state.open_number
            self._next += count - 1
            state.open_number = None
        else:
            first = self._next
            self._next += count
        return first

    def feed(
        self, stream: str, data: bytes, now: float, wall: float | None = None
    ) -> list[LogBatch]:
        """`now`: the monotonic clock (partial-line deadlines); `wall`: the
        time.time() the bytes were read (the batches' `at`)."""
        state = self._state(stream)
        text = state.decoder.decode(data)
        if not text:
            return []
        if state.text_at is None:
            state.text_at = wall
        if "\n" not in text:
            if state.waiting_since is None:
                state.waiting_since = now
            state.text += text
            return []
        first_at = state.text_at
        parts = (state.text + text).split("\n")
        rest = parts.pop()
        if "\r" in text or "\r" in state.text:
            parts = [p[:-1] if p.endswith("\r") else p for p in parts]
        state.text = rest
        state.waiting_since = now if rest else None
        state.text_at = wall if rest else None
        batches: list[LogBatch] = []
        if state.open_number is not None and state.open_number != self._next - 1:
            # Lines of other streams were numbered since this line opened: its
            # continuation goes alone, the new lines get the next numbers.
            batches.append(LogBatch(stream, self._number(state, 1), parts[:1], False, first_at))
            parts = parts[1:]
            if not parts:
                return batches
            first_at = wall
        batches.append(LogBatch(stream, self._number(state, len(parts)), parts, False, first_at))
        return batches

    def next_deadline(self) -> float | None:
        deadlines = [
            s.waiting_since + self.partial_delay
            for s in self._streams.values()
            if s.waiting_since is not None
        ]
        return min(deadlines) if deadlines else None

    def flush_due(self, now: float) -> list[LogBatch]:
        """Emit, as partial lines, text that has waited long enough."""
        out: list[LogBatch] = []
        for name, state in self._streams.items():
            if state.waiting_since is None or now - state.waiting_since < self.partial_delay:
                continue
            text, at = state.text, state.text_at
            # A trailing CR may be the first half of CRLF: keep it back.
            held = "\r" if text.endswith("\r") else ""
            if held:
                text = text[:-1]
            state.text = held
            state.waiting_since = None
            state.text_at = at if held else None
            if not text:
                continue
            first = state.open_number if state.open_number is not None else self._next
            if state.open_number is None:
                self._next += 1
            state.open_number = first
            out.append(LogBatch(name, first, [text], True, at))
        return out

    def finish(self) -> list[LogBatch]:
        """End of output: flush every stream's last line, terminated or not."""
        out: list[LogBatch] = []
        for name, state in self._streams.items():
            text = state.text + state.decoder.decode(b"", final=True)
            at, state.text, state.text_at = state.text_at, "", None
            state.waiting_since = None
            if text or state.open_number is not None:
                out.append(LogBatch(name, self._number(state, 1), [text], False, at, eol=False))
        return out
