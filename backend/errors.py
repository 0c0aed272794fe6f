"""One error hierarchy; each error carries its HTTP status and a stable code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Phase


class PullrunError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(PullrunError):
    status_code = 404
    code = "not_found"


class Conflict(PullrunError):
    status_code = 409
    code = "conflict"


class QueueFull(PullrunError):
    status_code = 429
    code = "queue_full"


class ShuttingDown(PullrunError):
    status_code = 503
    code = "shutting_down"


class EngineUnavailable(PullrunError):
    status_code = 503
    code = "engine_unavailable"


class PipelineError(Exception):
    """A run could not go on; becomes the `error` of its `done` event."""

    def __init__(self, phase: Phase, message: str) -> None:
        super().__init__(f"{phase.value}: {message}")
        self.phase = phase
        self.message = message
