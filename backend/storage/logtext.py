"""A run's stored output as plain text, rebuilt from its event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

_LOG_PREFIX = b"event: log\ndata: "


def log_text(path: Path, stream: str | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield the log as UTF-8 text, one line per line, in order.

    A line sent in parts (partial events) is written when complete, so lines
    of different streams never interleave mid-line; a line still open at the
    end (a running run) is written as it stands.
    """
    open_parts: dict[str, list[str]] = {}
    out: list[str] = []
    with open(path, "rb") as f:
        rest = b""
        while True:
            data = f.read(chunk)
            buf = rest + data
            blocks = buf.split(b"\n\n")
            # The last piece is unfinished (an event still being written): keep
            # it for the next read, and leave it out at the end.
            rest = blocks.pop()
            for block in blocks:
                start = block.find(_LOG_PREFIX)
                if start < 0:
                    continue
                event = orjson.loads(block[start + len(_LOG_PREFIX) :])
                name = event["stream"]
                if stream is not None and name != stream:
                    continue
                lines: list[str] = event["lines"]
                if not lines:
                    continue
                held = open_parts.pop(name, None)
                if held is not None:
                    held.append(lines[0])
                    lines = ["".join(held), *lines[1:]]
                if event["partial"]:
                    open_parts[name] = [lines[-1]]
                    lines = lines[:-1]
                if lines:
                    out.append("\n".join(lines))
                    out.append("\n")
            if out:
                yield "".join(out).encode("utf-8", "surrogatepass")
                out = []
            if not data:
                break
    tail = "".join(part + "\n" for parts in open_parts.values() for part in ["".join(parts)])
    if tail:
        yield tail.encode("utf-8", "surrogatepass")
