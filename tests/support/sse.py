"""A strict SSE reader for tests: checks the wire format as it parses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from backend.storage.reader import EventSplitter, LineJoiner, join_lines, parse_event


@dataclass
class Event:
    id: str
    type: str
    data: Any
    at: float  # monotonic arrival time


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream body; comments (keepalives) are skipped.

    Strict: every event must be pullrun's own three-line form."""
    splitter = EventSplitter()
    for chunk in response.iter_raw():
        for block in splitter.feed(chunk):
            assert block.startswith(b"id: ") and block.count(b"\n") == 2, f"odd event: {block!r}"
            parsed = parse_event(block)
            assert parsed is not None and parsed.type, f"odd event: {block!r}"
            yield Event(parsed.id, parsed.type, parsed.data, time.monotonic())
    rest = splitter.rest
    assert rest.strip(b"\r\n") == b"" or rest.startswith(b":"), (
        f"unterminated event at EOF: {rest!r}"
    )


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
    joiner = LineJoiner()
    chosen = (e for e in events if stream is None or e.data.get("stream") == stream)
    lines = join_lines(chosen, joiner)
    if stream is None:  # one stream alone has gaps: the other's lines
        assert joiner.problems == [], joiner.problems
    return [line.text for line in lines]
