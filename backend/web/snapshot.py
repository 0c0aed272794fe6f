"""A run's state as of one event id, rebuilt from its event file, for pages.

The run page is rendered from this snapshot and its script subscribes with
`?after=<last_event_id>`: nothing is shown twice and nothing is missed.
Only the last `tail_lines` lines are kept; the page says how many came before
(`first_line`, `earlier`) and loads them on demand (GET /api/runs/{id}/lines).

`tail_snapshot` builds it through the run's event index (storage/eventlog.py):
the run's non-`log` events (status, pull, notices, done) and the bytes of its
newest lines only (storage/tail.py), so its cost does not grow with the log.
`build_snapshot` replays the whole file: the reference the tests hold
`tail_snapshot` to (tests/unit/test_tail_snapshot.py), not used by the server.

Output cannot make the page slow or heavy: no line is kept longer than
MAX_LINE_CHARS (static/js/term.js lays out no more than MAX_SCAN characters
of a line, and this is one more, so it still shows the line as cut), and the
lines sent to the page add up to about MAX_PAGE_CHARS at most (the oldest of
the tail are left out past it). The download has the full text.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import NotFound
from ..runs.progress import PullProgress
from ..storage.eventlog import EventLog
from ..storage.reader import Event, Line, LineJoiner, read_events
from ..storage.tail import newest_lines, read_events_at
from ..storage.tail import page_lines as _page_lines

MAX_LINE_CHARS = 1_000_000 + 1  # static/js/term.js MAX_SCAN, and one more
MAX_PAGE_CHARS = 4_000_000


@dataclass
class Snapshot:
    last_event_id: int = 0
    status: str | None = None
    status_at: dict[str, str] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    pull_overall: dict[str, Any] | None = None
    pull_error: str | None = None
    notices: list[str] = field(default_factory=list)
    lines: deque[Line] = field(default_factory=deque)
    total_lines: int = 0  # highest line number seen
    done: dict[str, Any] | None = None

    def as_dict(self, line_objects: bool = False) -> dict[str, Any]:
        """Its JSON form (the page's and GET /api/runs/{id}/snapshot's);
        `line_objects`: the lines as `Line`s, which orjson writes as their dicts."""
        lines = page_lines(self.lines)
        first_line = lines[0].n if lines else self.total_lines + 1
        return {
            "last_event_id": self.last_event_id,
            "status": self.status,
            "status_at": self.status_at,
            "layers": list(self.layers.values()),
            "pull_overall": self.pull_overall,
            "pull_error": self.pull_error,
            "notices": self.notices,
            "lines": lines if line_objects else [line.as_dict() for line in lines],
            "total_lines": self.total_lines,
            "first_line": first_line,  # total_lines + 1 when there is none
            "earlier": first_line > 1,  # lines numbered below first_line exist
            "done": self.done,
        }


def _layer_view(progress: PullProgress, layer_id: str, data: dict[str, Any]) -> dict[str, Any]:
    layer = progress.layers[layer_id]
    return {
        "id": layer_id,
        "state": layer.state,
        "status": data["status"],
        "current": data.get("current"),
        "total": layer.total,
        "downloaded": layer.downloaded,
        "extracted": layer.extracted,
        "download": round(layer.download, 4),
        "extract": round(layer.extracted, 4),  # "Pull complete" sets it to 1
    }


def page_lines(lines: deque[Line], budget: int | None = None) -> list[Line]:
    """The newest lines whose texts add up to `budget` characters (the newest
    line at least; MAX_PAGE_CHARS when None)."""
    return _page_lines(lines, MAX_PAGE_CHARS if budget is None else budget)


def _bounded(data: dict[str, Any], joiner: LineJoiner) -> dict[str, Any]:
    """A `log` event's data with its lines cut so that none grows past
    MAX_LINE_CHARS, a line continued over many events included (each
    continuation would otherwise copy the whole line again)."""
    lines: list[str] = data["lines"]
    if not lines:
        return data
    # lines[0] continues the stream's open line, if there is one
    room = max(0, MAX_LINE_CHARS - joiner.open_length(data["stream"]))
    if len(lines[0]) <= room and all(len(text) <= MAX_LINE_CHARS for text in lines):
        return data
    cut = [lines[0][:room], *(text[:MAX_LINE_CHARS] for text in lines[1:])]
    return {**data, "lines": cut}


def _apply(snap: Snapshot, progress: PullProgress, event: Event) -> None:
    """What a non-`log` event does to the snapshot."""
    kind, data = event.type, event.data
    if kind == "status":
        snap.status = data["status"]
        snap.status_at[data["status"]] = data["at"]
    elif kind == "pull":
        message = {
            "status": data["status"],
            "id": data["layer"],
            "progressDetail": {
                k: data[k] for k in ("current", "total", "units") if data.get(k) is not None
            },
        }
        progress.update(message)
        snap.pull_overall = data["overall"]
        if data.get("error"):
            snap.pull_error = data.get("message")
        if data["layer"]:
            snap.layers[data["layer"]] = _layer_view(progress, data["layer"], data)
    elif kind == "notice":
        snap.notices.append(data["message"])
    elif kind == "done":
        snap.done = data


def _open(log: EventLog) -> BinaryIO:
    try:
        return open(log.path, "rb", buffering=0)  # (the caller closes it)
    except FileNotFoundError:  # deleted meanwhile
        raise NotFound(f"no run with id {log.path.stem!r}") from None


def tail_snapshot(log: EventLog, tail_lines: int = 1000) -> Snapshot:
    """The snapshot as of the log's last event, through its index: its
    non-`log` events and its newest `tail_lines` lines (MAX_PAGE_CHARS in all)."""
    index = log.index()
    snap = Snapshot(last_event_id=index.events, total_lines=index.total_lines)
    if not index.events:
        return snap
    progress = PullProgress()
    with _open(log) as f:
        for event in read_events_at(f.fileno(), index, index.non_log()):
            _apply(snap, progress, event)
        snap.lines = deque(
            newest_lines(
                f.fileno(), index, index.total_lines + 1, tail_lines, MAX_LINE_CHARS, MAX_PAGE_CHARS
            )
        )
    return snap


def lines_before(log: EventLog, before: int, limit: int) -> tuple[list[Line], int, bool]:
    """GET /api/runs/{id}/lines: the newest `limit` lines numbered below
    `before`, cut as the snapshot's are, and (the number of the oldest, or
    `before` when none; whether lines numbered below it exist)."""
    index = log.index()
    if not index.events or before <= 1:
        return [], before, False
    with _open(log) as f:
        got = newest_lines(f.fileno(), index, before, limit, MAX_LINE_CHARS, MAX_PAGE_CHARS)
    if not got:
        return [], before, False
    return got, got[0].n, got[0].n > 1


def build_snapshot(path: Path, upto: int | None = None, tail_lines: int = 1000) -> Snapshot:
    """Replay the event file up to event `upto` (all when None): the
    reference for `tail_snapshot` (its cost grows with the log)."""
    snap = Snapshot()
    snap.lines = deque(maxlen=tail_lines)
    progress = PullProgress()
    joiner = LineJoiner()
    for event in read_events(path, upto=upto):
        snap.last_event_id = event.number
        kind, data = event.type, event.data
        if kind == "log":
            joined = joiner.feed(_bounded(data, joiner))
            stream, first, texts, at = data["stream"], joined.first, joined.texts, data.get("at")
            skip = max(0, len(texts) - tail_lines)  # would leave the tail at once
            snap.lines.extend(
                Line(first + i, stream, texts[i], at=at) for i in range(skip, len(texts))
            )
            if joined.opened is not None:
                snap.lines.append(joined.opened)
            snap.total_lines = joiner.total
        else:
            _apply(snap, progress, event)
    joiner.open_lines()  # the texts of lines still open, up to date
    return snap
