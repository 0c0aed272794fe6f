"""A run's stored output as plain text, rebuilt from its event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .reader import READ_CHUNK, EventSplitter, Line, LineJoiner, parse_event

NO_TIME = "0001-01-01T00:00:00.000Z"  # a line of a log older than `at` with nothing before it


def log_text(
    path: Path,
    stream: str | None = None,
    chunk: int = READ_CHUNK,
    *,
    timestamps: bool = False,
    default_at: str | None = None,
) -> Iterator[bytes]:
    """Yield the log as UTF-8 text, one line per line, in order.

    A line sent in parts (partial events) is written when complete, so lines
    of different streams never interleave mid-line; a line still open at the
    end (a running run) is written as it stands. `stream`: that stream's lines
    only. `timestamps`: each line starts with the time it was read and a
    space (`docker logs -t`): its `log` event's `at`, the first part's for a
    line sent in parts. A log written before events carried `at` uses the
    last time seen before, else `default_at`.
    """
    joiner = LineJoiner()
    splitter = EventSplitter()
    last_at = default_at or NO_TIME

    def stamped(line: Line) -> str:
        return f"{line.at or last_at} {line.text}" if timestamps else line.text

    with open(path, "rb") as f:
        while data := f.read(chunk):
            out: list[str] = []
            for block in splitter.feed(data):
                event = parse_event(block)
                if event is None or event.type != "log":
                    continue
                if stream is not None and event.data["stream"] != stream:
                    continue
                joined = joiner.feed(event.data)
                if joined.continued is not None and not joined.continued.partial:
                    out.append(stamped(joined.continued))
                if timestamps:
                    last_at = event.data.get("at") or last_at
                    out.extend(f"{last_at} {text}" for text in joined.texts)
                else:
                    out.extend(joined.texts)
            if out:
                out.append("")
                yield "\n".join(out).encode("utf-8", "surrogatepass")
    tail = "".join(stamped(line) + "\n" for line in joiner.open_lines())
    if tail:
        yield tail.encode("utf-8", "surrogatepass")
