"""Event types and their Server-Sent Events wire encoding.

An event is encoded once, when it is appended to a run's log; every
subscriber (and the replay file) gets exactly those bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class EventType(StrEnum):
    STATUS = "status"
    PULL = "pull"
    LOG = "log"
    NOTICE = "notice"
    DONE = "done"
    # Only on the global stream (GET /api/events).
    RUN = "run"
    DELETED = "deleted"
    RESET = "reset"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_data(data: Any) -> bytes:
    # orjson never emits a raw newline, so the JSON stays on one `data:` line
    # and text containing \r or \n round-trips exactly (SSE fact 17).
    return orjson.dumps(data)


def encode_event(event_id: int | str, event_type: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        str(event_id).encode(),
        event_type.encode(),
        encode_data(data),
    )


def decode_events(raw: bytes) -> list[tuple[str, str, Any]]:
    """Parse bytes produced by `encode_event` back into (id, type, data).

    Only for our own encoding (one data line per event), used for replay
    files and tests; it is not a general SSE parser.
    """
    out: list[tuple[str, str, Any]] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        event_id = event_type = ""
        data: Any = None
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = line[4:].decode()
            elif line.startswith(b"event: "):
                event_type = line[7:].decode()
            elif line.startswith(b"data: "):
                data = orjson.loads(line[6:])
        out.append((event_id, event_type, data))
    return out
