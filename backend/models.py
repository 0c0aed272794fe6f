"""Request and response models for the REST API."""

from __future__ import annotations

import re
import shlex
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .reference import validate_reference
from .run_options import (
    MAX_PORTS,
    MAX_VOLUMES,
    PortMapping,
    Volume,
    check_gpus,
    check_network,
    check_ports,
    check_volumes,
    parse_port,
    parse_volume,
)

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLATFORM = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+(/[a-z0-9_.]+)?)?")
ENGINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# What swarmkit accepts: `node.id|hostname|role|platform.os|platform.arch`,
# `node.labels.<key>`, `engine.labels.<key>`, then == or !=, then a value.
CONSTRAINT = re.compile(
    r"(node\.(id|hostname|role|platform\.os|platform\.arch|labels\.[A-Za-z0-9_.-]{1,128})"
    r"|engine\.labels\.[A-Za-z0-9_.-]{1,128}) ?(==|!=) ?[A-Za-z0-9_.:/-]{1,256}"
)
MAX_CONSTRAINTS = 16
_MEMORY = re.compile(r"(\d+)\s*([bkmg]?)b?", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 6 * 1024 * 1024  # the engine's own minimum
MAX_TIMEOUT = 365 * 24 * 3600

# Input limits of a run request (docs/api.md, "Limits"); past them: 422. Sizes
# are in characters. Maximums set by the server (memory, CPUs, process count,
# timeout) are its run policy: backend/runs/policy.py.
MAX_IMAGE_LENGTH = 1024
MAX_ENV = 256  # variables in `env` and `secret_env` together
MAX_KEY_LENGTH = 256  # a key of `env`, `secret_env` or `labels`
MAX_ENV_VALUE_LENGTH = 32 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_LENGTH = 4096
MAX_ARGS = 1024  # words of `command`, and of `entrypoint`
MAX_ARG_LENGTH = 32 * 1024
MAX_STRING_LENGTH = 4096  # `workdir`, `user`, `platform`, a registry username
MAX_SECRET_LENGTH = 16 * 1024  # a registry password or identity token
REDACTED = "***"  # what is shown in place of a value that is not shown
MAX_URL_LENGTH = 2048  # a webhook URL (`notify_url`, PULLRUN_WEBHOOKS)


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

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    username: str | None = Field(None, max_length=MAX_STRING_LENGTH)
    password: str | None = Field(None, repr=False, max_length=MAX_SECRET_LENGTH)
    identitytoken: str | None = Field(None, repr=False, max_length=MAX_SECRET_LENGTH)

    @model_validator(mode="after")
    def _complete(self) -> RegistryAuth:
        if self.identitytoken:
            return self
        if not (self.username and self.password):
            raise ValueError("give username and password, or identitytoken")
        return self

    def __repr__(self) -> str:
        return "RegistryAuth(<redacted>)"


def memory_bytes(value: Any) -> Any:
    """`"256m"` -> 268435456; ints pass through (bytes). For requests and settings."""
    if isinstance(value, bool):
        raise ValueError('must be bytes or a size like "256m"')
    if isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if match is None:
            raise ValueError('must be bytes or a size like "256m" (units b, k, m, g)')
        return int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    return value


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
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment. Its values are shown only to the run's creator and admins "
        "(others see `***`).",
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment whose values reach the container and are never stored, "
        "returned or logged: a run shows its keys, each with the value `***`.",
    )
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
    pids_limit: int | None = Field(
        None, ge=1, description="Processes the container may have; default from settings."
    )
    auto_remove: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    engine: str | None = Field(
        None, description="The engine to run on, by name (`GET /api/engines`); none: any."
    )
    engine_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Run only on an engine that has all of these labels (engines file).",
    )
    constraints: list[str] = Field(
        default_factory=list,
        description="Swarm placement constraints (`node.labels.pool==batch`): the run goes to "
        "a swarm engine, whose cluster places it on a node that meets them all.",
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        description="Volumes (`docker run -v`): `{source, target, read_only}` or "
        "`SOURCE:TARGET[:ro]`; a named volume always, a host path only under "
        "PULLRUN_ALLOWED_BIND_PATHS. Not on a swarm engine.",
    )
    network: str | None = Field(
        None,
        description="The network to join (`--network`), one of PULLRUN_ALLOWED_NETWORKS; "
        "none: the engine's default network. Not on a swarm engine.",
    )
    ports: list[PortMapping] = Field(
        default_factory=list,
        description="Ports to publish (`-p`): `{container_port, host_port, host_ip, protocol}` "
        "or `[IP:][HOST:]CONTAINER[/udp]`; only with PULLRUN_ALLOW_PORTS, on 127.0.0.1 unless "
        "PULLRUN_ALLOWED_PORT_HOSTS says. Not on a swarm engine.",
    )
    gpus: str | None = Field(
        None,
        description="GPUs (`--gpus`): `all`, a count or `device=ID[,ID]`; only with "
        "PULLRUN_ALLOW_GPUS. Not on a swarm engine.",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return validate_reference(value)

    @field_validator("command", "entrypoint", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_command(value)

    @field_validator("env", "secret_env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"key {_show(key)} must match [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env_apart(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        both = sorted(set(value) & set(info.data.get("env") or {}))
        if both:
            raise ValueError(f"key {_show(both[0])} is also in env: give each variable once")
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
        return memory_bytes(value)

    @field_validator("memory")
    @classmethod
    def _memory_minimum(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_MEMORY:
            raise ValueError(f"must be at least {MIN_MEMORY} bytes (6m)")
        return value

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_strings(cls, value: Any) -> Any:
        return [parse_volume(v) for v in value] if isinstance(value, list) else value

    @field_validator("ports", mode="before")
    @classmethod
    def _port_strings(cls, value: Any) -> Any:
        return [parse_port(v) for v in value] if isinstance(value, list) else value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        return check_network(value)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return check_gpus(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith("pullrun."):
                raise ValueError(f"label {key!r}: the pullrun. prefix is reserved")
        return value


def _show(key: str, width: int = 40) -> str:
    """A key for an error message: quoted, escaped (no lone surrogate), cut short."""
    shown = repr(key[:width])
    return shown + "…" if len(key) > width else shown


def _valid_text(text: str) -> bool:
    """False for a string that UTF-8 cannot encode (a lone surrogate, from JSON's \\ud800)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _invalid_text(value: Any, path: str) -> str | None:
    """Where in a raw input value a string is not valid Unicode, or None."""
    if isinstance(value, str):
        return None if _valid_text(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _valid_text(key):
                return f"a key of {path}"
            found = _invalid_text(item, f"{path}[{_show(str(key))}]")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _invalid_text(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _check_map(
    value: dict[str, str], what: str, count: int, key_length: int, value_length: int
) -> None:
    if len(value) > count:
        raise ValueError(f"at most {count} {what} (got {len(value)})")
    for key, item in value.items():
        if len(key) > key_length:
            raise ValueError(f"key {_show(key)} is longer than {key_length} characters")
        if len(item) > value_length:
            raise ValueError(f"the value of {_show(key)} is longer than {value_length} characters")
        if "\x00" in item or "\x00" in key:
            raise ValueError(f"{_show(key)}: may not contain a NUL character")


class RunCreate(RunSpec):
    """A run request: the spec, plus what is never kept (`secret_env` values,
    `registry_auth`). Only requests are held to the input limits, so records
    stored before a limit existed still load."""

    secret_env: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Environment whose values reach the container and are never stored, "
        "returned or logged: a run shows its keys, each with the value `***`.",
    )
    registry_auth: RegistryAuth | None = Field(
        None, description="Write-only registry credentials for this pull.", repr=False
    )
    notify_url: str | None = Field(
        None,
        repr=False,
        description="Write-only: a URL of this run's own, called as PULLRUN_WEBHOOKS are "
        "(only when PULLRUN_ALLOW_NOTIFY_URL is on).",
    )

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value)

    @field_validator("*", mode="before")
    @classmethod
    def _unicode(cls, value: Any, info: ValidationInfo) -> Any:
        where = _invalid_text(value, str(info.field_name))
        if where is not None:
            raise ValueError(f"is not valid Unicode: a lone surrogate in {where}")
        return value

    @field_validator("image", mode="before")
    @classmethod
    def _image_length(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_IMAGE_LENGTH:
            raise ValueError(f"is longer than {MAX_IMAGE_LENGTH} characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_limits(cls, value: dict[str, str]) -> dict[str, str]:
        _check_map(value, "variables", MAX_ENV, MAX_KEY_LENGTH, MAX_ENV_VALUE_LENGTH)
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env_limits(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        room = MAX_ENV - len(info.data.get("env") or {})
        if len(value) > room:
            raise ValueError(f"at most {MAX_ENV} variables in env and secret_env together")
        _check_map(value, "variables", MAX_ENV, MAX_KEY_LENGTH, MAX_ENV_VALUE_LENGTH)
        return value

    @field_validator("labels", "engine_labels")
    @classmethod
    def _label_limits(cls, value: dict[str, str]) -> dict[str, str]:
        _check_map(value, "labels", MAX_LABELS, MAX_KEY_LENGTH, MAX_LABEL_VALUE_LENGTH)
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_CONSTRAINTS:
            raise ValueError(f"at most {MAX_CONSTRAINTS} constraints")
        for constraint in value:
            if not CONSTRAINT.fullmatch(constraint):
                raise ValueError(
                    f"{_show(constraint)} is not a swarm constraint: "
                    "node.<attribute> or engine.labels.<key>, == or !=, then a value"
                )
        return value

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_count(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_VOLUMES:
            raise ValueError(f"at most {MAX_VOLUMES} volumes")
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _port_count(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_PORTS:
            raise ValueError(f"at most {MAX_PORTS} ports")
        return value

    @field_validator("volumes")
    @classmethod
    def _volume_limits(cls, value: list[Volume]) -> list[Volume]:
        return check_volumes(value)

    @field_validator("ports")
    @classmethod
    def _port_limits(cls, value: list[PortMapping]) -> list[PortMapping]:
        return check_ports(value)

    @field_validator("engine")
    @classmethod
    def _engine_name(cls, value: str | None) -> str | None:
        if value is not None and not ENGINE_NAME.fullmatch(value):
            raise ValueError("must be an engine's name: 1-63 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("command", "entrypoint")
    @classmethod
    def _argument_limits(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) > MAX_ARGS:
            raise ValueError(f"at most {MAX_ARGS} arguments (got {len(value)})")
        for index, word in enumerate(value):
            if len(word) > MAX_ARG_LENGTH:
                raise ValueError(f"argument {index} is longer than {MAX_ARG_LENGTH} characters")
            if "\x00" in word:
                raise ValueError(f"argument {index} may not contain a NUL character")
        return value

    @field_validator("workdir", "user", "platform")
    @classmethod
    def _string_limits(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_STRING_LENGTH:
            raise ValueError(f"is longer than {MAX_STRING_LENGTH} characters")
        return value


def check_webhook_url(url: str) -> str:
    """A webhook URL as given, or ValueError: http(s), a host, bounded, no
    whitespace. The message never repeats the URL (it may hold credentials)."""
    from urllib.parse import urlsplit

    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("may not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


class WebhookDelivery(BaseModel):
    """One webhook call of a run (backend/runs/webhooks.py): its state so far."""

    id: str = Field(description="Sent as `X-Pullrun-Delivery`; the same on every attempt.")
    url: str = Field(description="Where it goes, without credentials or query values.")
    event: Literal["run.started", "run.finished"]
    status: Literal["pending", "delivered", "failed"]
    attempts: int = 0
    last_status: int | None = Field(None, description="The HTTP status of the last attempt.")
    last_error: str | None = Field(None, description="Why the last attempt failed.")
    created_at: str
    last_attempt_at: str | None = None
    next_attempt_at: str | None = Field(None, description="When a pending one is tried again.")
    finished_at: str | None = Field(None, description="When it was delivered or given up.")


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
    engine: str | None = Field(None, description="The engine the run was placed on.")
    node: str | None = Field(
        None, description="On a swarm engine: the node the cluster placed the run's task on."
    )
    container_id: str | None = None
    created_at: str
    created_by: str | None = Field(
        None, description="The user or token that started the run (None: before sign-in existed)"
    )
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
    webhooks: list[WebhookDelivery] = Field(
        default_factory=list, description="Its webhook deliveries (PULLRUN_WEBHOOKS, notify_url)."
    )
    links: RunLinks


class NodeView(BaseModel):
    """A node of a swarm engine."""

    name: str
    role: str = Field(description="`manager` or `worker`")
    state: str = Field(description="`ready`, `down`, ...")
    availability: str = Field(description="`active`, `pause` or `drain`")
    os: str | None = None
    arch: str | None = None
    cpus: float | None = None
    memory: int | None = None
    pullrun_tasks: int = Field(description="Tasks of pullrun's runs running there")


class EngineView(BaseModel):
    """One engine, as `GET /api/engines` and `engine` events show it (no secrets)."""

    name: str
    kind: str = Field(description="`docker`")
    host: str = Field(description="Where it is, without credentials.")
    labels: dict[str, str]
    state: Literal["up", "down", "unknown"]
    version: str | None = Field(None, description="The engine's version")
    api_version: str | None = None
    os: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory: int | None = Field(None, description="Bytes")
    max_concurrent_runs: int
    active_runs: int
    queued_runs: int = Field(description="Runs waiting that this engine could take")
    last_error: str | None = Field(None, description="Why it is down")
    checked_at: str | None = Field(None, description="Its last health check")
    nodes: list[NodeView] | None = Field(
        None, description="A swarm's nodes (kind `swarm`); null for a single engine"
    )


class EngineList(BaseModel):
    engines: list[EngineView]


class RunList(BaseModel):
    runs: list[RunRecord]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
