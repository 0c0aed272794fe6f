"""A run's state as of one event id, rebuilt from its event file, for pages.

The run page is rendered from this snapshot and its script subscribes with
`?after=<last_event_id>`: nothing is shown twice and nothing is missed.
Only the last `tail_lines` lines are kept; the page says how many came before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.progress import PullProgress
from ..storage.reader import Line, LineJoiner, read_events


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
            "lines": [line.as_dict() for line in self.lines],
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
            joined = joiner.feed(data)
            stream, first, texts = data["stream"], joined.first, joined.texts
            skip = max(0, len(texts) - tail_lines)  # would leave the tail at once
            snap.lines.extend(Line(first + i, stream, texts[i]) for i in range(skip, len(texts)))
            if joined.opened is not None:
                snap.lines.append(joined.opened)
            snap.total_lines = joiner.total
        elif kind == "notice":
            snap.notices.append(data["message"])
        elif kind == "done":
            snap.done = data
    return snap
