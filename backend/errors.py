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


class Unauthorized(PullrunError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    status_code = 401
    code = "unauthorized"


class Forbidden(PullrunError):
    """Signed in, but the role (or the CSRF token) is not enough."""

    status_code = 403
    code = "forbidden"


class TooManyRequests(PullrunError):
    """Slow down; `retry_after` seconds is sent as the Retry-After header."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadRequest(PullrunError):
    status_code = 400
    code = "bad_request"


class PayloadTooLarge(PullrunError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(PullrunError):
    status_code = 415
    code = "unsupported_media_type"


class PolicyDenied(PullrunError):
    """The run policy refuses the run outright (an image not allowed): 403."""

    status_code = 403
    code = "policy_denied"


class PolicyViolation(PullrunError):
    """The run asks for more than the run policy allows: 422, with `fields`
    (`{field, message}`) as a validation error has."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in fields))
        self.fields = [{"field": field, "message": message} for field, message in fields]


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


class DiskFull(PullrunError):
    """The data dir's filesystem has no room left (or less than min_free_bytes)."""

    status_code = 507
    code = "disk_full"


class EngineUnavailable(PullrunError):
    status_code = 503
    code = "engine_unavailable"


class PipelineError(Exception):
    """A run could not go on; becomes the `error` of its `done` event."""

    def __init__(self, phase: Phase, message: str) -> None:
        super().__init__(f"{phase.value}: {message}")
        self.phase = phase
        self.message = message
