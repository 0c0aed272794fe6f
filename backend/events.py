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
    ENGINE = "engine"
    RESET = "reset"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_at(seconds: float) -> str:
    """`seconds` since the epoch as now_rfc3339 writes a time (UTC, milliseconds)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def encode_data(data: Any) -> bytes:
    # orjson never emits a raw newline, so the JSON stays on one `data:` line
    # and text containing \r or \n round-trips exactly: an EventSource would
    # otherwise split a raw CR or LF into separate data lines.
    return orjson.dumps(data)


def encode_event(event_id: int | str, event_type: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        str(event_id).encode(),
        event_type.encode(),
        encode_data(data),
    )
