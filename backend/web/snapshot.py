"""A run's state as of one event id, rebuilt from its event file, for pages.

The run page is rendered from this snapshot and its script subscribes with
`?after=<last_event_id>`: nothing is shown twice and nothing is missed.
Only the last `tail_lines` lines are kept; the page says how many came before.

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
from typing import Any

from ..runs.progress import PullProgress
from ..storage.reader import Line, LineJoiner, read_events

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_event_id": self.last_event_id,
            "status": self.status,
            "status_at": self.status_at,
            "layers": list(self.layers.values()),
            "pull_overall": self.pull_overall,
            "pull_error": self.pull_error,
            "notices": self.notices,
            "lines": [line.as_dict() for line in page_lines(self.lines)],
            "total_lines": self.total_lines,
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


def page_lines(lines: deque[Line], budget: int = MAX_PAGE_CHARS) -> list[Line]:
    """The newest lines whose texts add up to `budget` characters (the newest
    line at least)."""
    kept: list[Line] = []
    for line in reversed(lines):
        budget -= len(line.text)
        if budget < 0 and kept:
            break
        kept.append(line)
    kept.reverse()
    return kept


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


def build_snapshot(path: Path, upto: int | None = None, tail_lines: int = 1000) -> Snapshot:
    """Replay the event file up to event `upto` (all when None)."""
    snap = Snapshot()
    snap.lines = deque(maxlen=tail_lines)
    progress = PullProgress()
    joiner = LineJoiner()
    for event in read_events(path, upto=upto):
        snap.last_event_id = event.number
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
        elif kind == "log":
            joined = joiner.feed(_bounded(data, joiner))
            stream, first, texts, at = data["stream"], joined.first, joined.texts, data.get("at")
            skip = max(0, len(texts) - tail_lines)  # would leave the tail at once
            snap.lines.extend(
                Line(first + i, stream, texts[i], at=at) for i in range(skip, len(texts))
            )
            if joined.opened is not None:
                snap.lines.append(joined.opened)
            snap.total_lines = joiner.total
        elif kind == "notice":
            snap.notices.append(data["message"])
        elif kind == "done":
            snap.done = data
    joiner.open_lines()  # the texts of lines still open, up to date
    return snap
