"""A strict SSE reader for tests: checks the wire format as it parses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    id: str
    type: str
    data: Any
    at: float  # monotonic arrival time


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream body; comments (keepalives) are skipped."""
    buf = b""
    for chunk in response.iter_raw():
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split(b"\n"):
                if not line or line.startswith(b":"):
                    continue
                name, _, value = line.decode().partition(": ")
                assert name not in fields, f"field {name} twice in one event: {block!r}"
                fields[name] = value
            if not fields:
                continue
            yield Event(
                fields["id"], fields["event"], orjson.loads(fields["data"]), time.monotonic()
            )
    assert buf.strip(b"\r\n") == b"" or buf.startswith(b":"), f"unterminated event at EOF: {buf!r}"


def collect(
    client: httpx.Client,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    until: str = "done",
    limit: int | None = None,
    timeout: float = 120,
) -> list[Event]:
    """Events from `url` until an event of type `until` (or `limit` events)."""
    events: list[Event] = []
    with client.stream(
        "GET", url, headers=headers, params=params, timeout=httpx.Timeout(timeout)
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in iter_events(response):
            events.append(event)
            if event.type == until or (limit is not None and len(events) >= limit):
                break
    return events


def log_lines(events: list[Event], stream: str | None = None) -> list[str]:
    """Whole lines from `log` events, partial pieces joined, checking numbering."""
    lines: dict[int, str] = {}
    open_line: dict[str, int] = {}
    for event in events:
        if event.type != "log":
            continue
        data = event.data
        if stream is not None and data["stream"] != stream:
            continue
        number = data["first"]
        pieces = list(data["lines"])
        if data["stream"] in open_line:
            assert number == open_line.pop(data["stream"]), "continuation has a new number"
            lines[number] += pieces.pop(0)
            number += 1
        for piece in pieces:
            assert number not in lines, f"line {number} sent twice"
            lines[number] = piece
            number += 1
        if data["partial"]:
            open_line[data["stream"]] = number - 1
    return [lines[n] for n in sorted(lines)]
