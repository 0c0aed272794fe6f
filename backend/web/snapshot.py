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

import orjson

from ..runs.progress import PullProgress


@dataclass
class LogLine:
    n: int
    stream: str
    text: str
    partial: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "stream": self.stream, "text": self.text, "partial": self.partial}


@dataclass
class Snapshot:
    last_event_id: int = 0
    status: str | None = None
    status_at: dict[str, str] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    pull_overall: dict[str, Any] | None = None
    pull_error: str | None = None
    notices: list[str] = field(default_factory=list)
    lines: deque[LogLine] = field(default_factory=deque)
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
        "download": round(layer.download, 4),
        "extract": round(layer.extracted, 4),  # "Pull complete" sets it to 1
    }


def build_snapshot(path: Path, upto: int | None = None, tail_lines: int = 1000) -> Snapshot:
    """Replay the event file up to event `upto` (all when None)."""
    snap = Snapshot()
    snap.lines = deque(maxlen=tail_lines)
    progress = PullProgress()
    open_line: dict[str, LogLine] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return snap
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        head, _, data_line = block.rpartition(b"\ndata: ")
        id_line, _, type_line = head.partition(b"\nevent: ")
        if not id_line.startswith(b"id: ") or not data_line:
            break  # a torn final write
        event_id = int(id_line[4:])
        if upto is not None and event_id > upto:
            break
        snap.last_event_id = event_id
        kind = type_line.decode()
        data = orjson.loads(data_line)
        if kind == "status":
            snap.status = data["status"]
            snap.status_at[data["status"]] = data["at"]
        elif kind == "pull":
            message = {
                "status": data["status"],
                "id": data["layer"],
                "progressDetail": {
                    k: data[k] for k in ("current", "total") if data.get(k) is not None
                },
            }
            progress.update(message)
            snap.pull_overall = data["overall"]
            if data.get("error"):
                snap.pull_error = data.get("message")
            if data["layer"]:
                snap.layers[data["layer"]] = _layer_view(progress, data["layer"], data)
        elif kind == "log":
            stream = data["stream"]
            number = data["first"]
            pieces: list[str] = data["lines"]
            held = open_line.pop(stream, None)
            if held is not None and pieces:
                held.text += pieces[0]
                held.partial = False
                pieces = pieces[1:]
                number += 1
            for text in pieces:
                line = LogLine(number, stream, text)
                snap.lines.append(line)
                number += 1
            snap.total_lines = max(snap.total_lines, number - 1)
            if data["partial"] and snap.lines:
                last = snap.lines[-1] if held is None or data["lines"][1:] else held
                last.partial = True
                open_line[stream] = last
        elif kind == "notice":
            snap.notices.append(data["message"])
        elif kind == "done":
            snap.done = data
    return snap
