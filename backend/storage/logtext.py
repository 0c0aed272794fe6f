"""A run's stored output as plain text, rebuilt from its event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .reader import READ_CHUNK, EventSplitter, LineJoiner, parse_event


def log_text(path: Path, stream: str | None = None, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    """Yield the log as UTF-8 text, one line per line, in order.

    A line sent in parts (partial events) is written when complete, so lines
    of different streams never interleave mid-line; a line still open at the
    end (a running run) is written as it stands.
    """
    joiner = LineJoiner()
    splitter = EventSplitter()
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
                    out.append(joined.continued.text)
                out.extend(joined.texts)
            if out:
                out.append("")
                yield "\n".join(out).encode("utf-8", "surrogatepass")
    tail = "".join(line.text + "\n" for line in joiner.open_lines())
    if tail:
        yield tail.encode("utf-8", "surrogatepass")
