"""Request and response models for the REST API."""

from __future__ import annotations

import re
import shlex
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .reference import validate_reference

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLATFORM = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+(/[a-z0-9_.]+)?)?")
_MEMORY = re.compile(r"(\d+)\s*([bkmg]?)b?", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 6 * 1024 * 1024  # the engine's own minimum
MAX_TIMEOUT = 365 * 24 * 3600


class RunStatus(StrEnum):
    QUEUED = "queued"
    PULLING = "pulling"
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.ERROR,
        RunStatus.CANCELED,
        RunStatus.TIMED_OUT,
    }
)


class Phase(StrEnum):
    """Where a run is, or was when it ended (`RunError.phase`, `durations`)."""

    QUEUE = "queue"
    PULL = "pull"
    CREATE = "create"
    START = "start"
    RUN = "run"
    # Only in errors: the server stopped (or crashed) while the run was active.
    INTERRUPTED = "interrupted"

    @property
    def status(self) -> RunStatus:
        """The status a run has while in this phase."""
        return PHASE_STATUS[self]


PHASE_STATUS = {
    Phase.QUEUE: RunStatus.QUEUED,
    Phase.PULL: RunStatus.PULLING,
    Phase.CREATE: RunStatus.CREATING,
    Phase.START: RunStatus.STARTING,
    Phase.RUN: RunStatus.RUNNING,
}
# The pipeline's phases, in order: what the run page's timeline shows.
PIPELINE_PHASES = tuple(PHASE_STATUS)


class PullPolicy(StrEnum):
    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


class RegistryAuth(BaseModel):
    """Credentials for one pull. Write-only: never stored, echoed or logged."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = None
    password: str | None = Field(None, repr=False)
    identitytoken: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _complete(self) -> RegistryAuth:
        if self.identitytoken:
            return self
        if not (self.username and self.password):
            raise ValueError("give username and password, or identitytoken")
        return self

    def __repr__(self) -> str:
        return "RegistryAuth(<redacted>)"


def _split_command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split like a shell command: {exc}") from None
    return value


class RunSpec(BaseModel):
    """What to run: the part of a request that is kept and shown."""

    # Never echo inputs in validation errors: they may hold registry credentials.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    image: Annotated[str, Field(description="Docker image reference, e.g. `busybox:latest`.")]
    command: list[str] | None = Field(
        None, description="Command; a string is split like a shell would."
    )
    entrypoint: list[str] | None = Field(None, description="Entrypoint override; string or list.")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    tty: bool = False
    pull: PullPolicy = PullPolicy.MISSING
    platform: str | None = Field(None, description="os[/arch[/variant]]")
    timeout: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT,
        description="Seconds from container start (at most a year); default from settings.",
    )
    memory: int | None = Field(None, description='Memory limit: bytes, or a string like "256m".')
    cpus: float | None = Field(None, gt=0, le=1024)
    auto_remove: bool = True
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return validate_reference(value)

    @field_validator("command", "entrypoint", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_command(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"key {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        if value is not None and not _PLATFORM.fullmatch(value):
            raise ValueError("must be os[/arch[/variant]], e.g. linux/amd64")
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_size(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError('must be bytes or a size like "256m"')
        if isinstance(value, str):
            match = _MEMORY.fullmatch(value.strip())
            if match is None:
                raise ValueError('must be bytes or a size like "256m" (units b, k, m, g)')
            return int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
        return value

    @field_validator("memory")
    @classmethod
    def _memory_minimum(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_MEMORY:
            raise ValueError(f"must be at least {MIN_MEMORY} bytes (6m)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith("pullrun."):
                raise ValueError(f"label {key!r}: the pullrun. prefix is reserved")
        return value


class RunCreate(RunSpec):
    registry_auth: RegistryAuth | None = Field(
        None, description="Write-only registry credentials for this pull.", repr=False
    )


class RunError(BaseModel):
    phase: Phase
    message: str


class Durations(BaseModel):
    queue: float | None = None
    pull: float | None = None
    create: float | None = None
    start: float | None = None
    run: float | None = None
    total: float | None = None


class RunLinks(BaseModel):
    self: str
    events: str
    logs: str
    page: str


class RunRecord(BaseModel):
    id: str
    status: RunStatus
    spec: RunSpec
    image_digest: str | None = None
    container_id: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    error: RunError | None = None
    durations: Durations = Field(default_factory=Durations)
    pull: dict[str, Any] | None = None
    log_lines: int = 0
    log_bytes: int = 0
    dropped_lines: int = 0
    dropped_bytes: int = 0
    last_event_id: int = 0
    links: RunLinks


class RunList(BaseModel):
    runs: list[RunRecord]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
