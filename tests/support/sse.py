"""A strict SSE reader for tests: checks the wire format as it parses."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from backend.storage.reader import Event, EventSplitter, LineJoiner, join_lines, parse_event

__all__ = ["Event", "iter_events", "log_lines"]


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream body; comments (keepalives) are skipped.

    Strict: every event must be pullrun's own three-line form."""
    splitter = EventSplitter()
    for chunk in response.iter_raw():
        for block in splitter.feed(chunk):
            assert block.startswith(b"id: ") and block.count(b"\n") == 2, f"odd event: {block!r}"
            event = parse_event(block)
            assert event is not None and event.type, f"odd event: {block!r}"
            yield event
    rest = splitter.rest
    assert rest.strip(b"\r\n") == b"" or rest.startswith(b":"), (
        f"unterminated event at EOF: {rest!r}"
    )


def log_lines(events: list[Event], stream: str | None = None) -> list[str]:
    """Whole lines from `log` events, partial pieces joined, checking numbering."""
    joiner = LineJoiner()
    chosen = (e for e in events if stream is None or e.data.get("stream") == stream)
    lines = join_lines(chosen, joiner)
    if stream is None:  # one stream alone has gaps: the other's lines
        assert joiner.problems == [], joiner.problems
    return [line.text for line in lines]
