"""Configuration: environment variables with the PULLRUN_ prefix, or CLI flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .models import check_webhook_url, memory_bytes

# A list setting: a JSON list (`["a", "b"]`) or a comma-separated string (`a,b`).
StrList = Annotated[list[str], NoDecode]


def split_list(value: Any) -> Any:
    """`field_validator(mode="before")` for a StrList: JSON list or `a, b`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULLRUN_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    data_dir: Path = Field(
        Path(".pullrun-data"), description="Where the run database and event logs live."
    )
    max_concurrent_runs: int = Field(
        4, ge=1, description="Runs executing at once per engine (engines file: its default)."
    )
    engines_file: Path | None = Field(
        None, description="A TOML file naming the engines; none: one engine from DOCKER_HOST."
    )
    placement_timeout: float = Field(
        600,
        gt=0,
        description="Seconds a run may wait for one of its engines to come up before it ends "
        "with error (phase queue).",
    )
    engine_check_interval: float = Field(
        5, gt=0, le=3600, description="Seconds between health checks of an engine that is up."
    )
    max_queued_runs: int = Field(
        100, ge=0, description="Runs waiting for a slot; past this, POST /api/runs answers 429."
    )
    default_timeout: float = Field(
        3600,
        gt=0,
        le=365 * 24 * 3600,
        description="Seconds a container may run when a run gives no timeout.",
    )
    pull_stall_timeout: float = Field(
        300, gt=0, description="Seconds a pull may go without any progress before it fails."
    )
    max_log_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Output kept per run; past it lines are only counted."
    )
    partial_line_delay: float = Field(
        0.25, gt=0, description="Seconds unterminated output waits before it is sent as partial."
    )
    keepalive: float = Field(15, gt=0, description="Seconds between SSE keepalive comments.")
    shutdown_grace: float = Field(
        20, ge=0, description="Seconds a graceful shutdown waits for canceled runs to finish."
    )
    retention_days: float = Field(
        0.0,
        ge=0,
        description="Finished runs older than this many days are deleted (0: kept at any age).",
    )
    max_disk_bytes: int = Field(
        10 * 1024**3,
        ge=0,
        description="Event logs and databases in the data dir stay under this: the oldest "
        "finished runs are deleted to make room (0: no limit).",
    )
    min_free_bytes: int = Field(
        1024**2,
        ge=0,
        description="Room kept free on the data dir's filesystem: below it output is no "
        "longer written (the run ends with error) and new runs get 507.",
    )
    auth: Literal["required", "off"] = Field(
        "required",
        description="`required`: every route but /healthz, /readyz and /login needs a token or "
        "a session; `off`: no sign-in, everyone is admin (refused unless the host is loopback).",
    )
    trusted_proxies: StrList = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-Proto and X-Forwarded-For "
        "are believed (the session cookie is Secure behind one that says https).",
    )
    session_idle_timeout: float = Field(
        12 * 3600, gt=0, description="Seconds a browser session may go unused before it ends."
    )
    session_max_age: float = Field(
        7 * 24 * 3600, gt=0, description="Seconds a browser session lasts at most, used or not."
    )
    signin_max_failures: int = Field(
        5, ge=1, description="Failed sign-ins a client may make per `signin_window` before 429."
    )
    signin_window: float = Field(
        60, gt=0, description="Seconds over which failed sign-ins are counted, per client."
    )
    allowed_hosts: StrList = Field(
        default_factory=list,
        description="Host names the server answers to (any port; `*.example.com` for a domain, "
        "`*` for any); always with localhost, 127.0.0.1, [::1] and `host`. Others get 400.",
    )
    allowed_origins: StrList = Field(
        default_factory=list,
        description="Other origins (`https://ci.example.com`) allowed to POST, PUT, PATCH or "
        "DELETE; any other origin but the server's own gets 403.",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest request body; past it the answer is 413."
    )

    # -- the run policy (backend/runs/policy.py) --------------------------------------
    allowed_images: StrList = Field(
        default_factory=lambda: ["*"],
        description="Images runs may use: patterns (`*` matches anything) matched against the "
        "normalised reference (`busybox` is `docker.io/library/busybox:latest`); `*`: any.",
    )
    denied_labels: StrList = Field(
        default_factory=lambda: ["pullrun.*", "traefik.*", "caddy*", "com.docker.*"],
        description="Label keys runs may not set: patterns, matched without regard to case.",
    )
    allowed_constraints: StrList = Field(
        default_factory=lambda: ["*"],
        description="Swarm placement constraints a run may add (`constraints`): patterns "
        "matched against each constraint as written (`node.labels.pool==*`); none: refused.",
    )
    allowed_bind_paths: StrList = Field(
        default_factory=list,
        description="Host directories a run may bind (`volumes` with an absolute `source`): "
        "a bind is allowed at or under one of them, compared as text after `.`/`..` are "
        "resolved; none: no bind (named volumes are always allowed).",
    )
    allowed_networks: StrList = Field(
        default_factory=list,
        description="Networks a run may join (`network`), by name; none: only the engine's "
        "default network (a run that names none).",
    )
    allow_ports: bool = Field(
        False, description="Let runs publish ports (`ports`) on PULLRUN_ALLOWED_PORT_HOSTS."
    )
    allowed_port_hosts: StrList = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Host addresses a published port may be bound to (`ports[].host_ip`).",
    )
    allow_gpus: bool = Field(False, description="Let runs ask for GPUs (`gpus`, as --gpus).")
    lend_server_credentials: bool | None = Field(
        None,
        description="Lend the server's own registry credentials (its docker config) to pulls "
        "without `registry_auth`; unset: only when PULLRUN_AUTH is off.",
    )
    default_memory: int | None = Field(
        1024**3,
        ge=6 * 1024**2,
        description="Memory limit of a run that gives none; none: no limit.",
    )
    max_memory: int | None = Field(
        16 * 1024**3, ge=6 * 1024**2, description="Largest memory limit a run may ask; none: any."
    )
    default_cpus: float | None = Field(
        1.0, gt=0, description="CPUs of a run that gives none; none: no limit."
    )
    max_cpus: float | None = Field(
        32.0,
        gt=0,
        description="Most CPUs a run may ask; none: any (the engine also refuses more than the "
        "host has).",
    )
    default_pids_limit: int = Field(
        1024, ge=1, description="Processes a run's container may have when the run gives none."
    )
    max_pids_limit: int = Field(
        32768, ge=1, description="Largest process limit (`pids_limit`) a run may ask."
    )
    max_timeout: float = Field(
        7 * 24 * 3600,
        gt=0,
        le=365 * 24 * 3600,
        description="Longest timeout a run may ask, in seconds (at least PULLRUN_DEFAULT_TIMEOUT).",
    )
    no_new_privileges: bool = Field(
        True,
        description="Start containers with `no-new-privileges` (setuid binaries gain nothing).",
    )
    max_sse_connections: int = Field(
        256, ge=1, description="Event streams open at once (both streams); past it: 429."
    )
    max_sse_connections_per_identity: int = Field(
        128, ge=1, description="Event streams one identity (user or token) may have open at once."
    )

    # -- webhooks (backend/runs/webhooks.py) -------------------------------------------
    webhooks: StrList = Field(
        default_factory=list,
        description="URLs (http or https) called with a JSON body, signed, when a run ends "
        "(and starts: PULLRUN_WEBHOOK_EVENTS).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature of each webhook body "
        "(`X-Pullrun-Signature: sha256=<hex>`); none: deliveries go unsigned.",
    )
    webhook_events: StrList = Field(
        default_factory=lambda: ["finished"],
        description="Which events call the webhooks: `finished`, `started` or both.",
    )
    webhook_timeout: float = Field(
        10, gt=0, le=300, description="Seconds one webhook attempt may take to connect or answer."
    )
    webhook_retry_for: float = Field(
        600,
        gt=0,
        le=7 * 24 * 3600,
        description="Seconds a failing webhook delivery is retried (exponential backoff) "
        "before it is recorded `failed`.",
    )
    webhook_max_attempts: int = Field(
        10, ge=1, le=100, description="Attempts a webhook delivery gets at most."
    )
    allow_notify_url: bool = Field(
        False,
        description="Let a run ask for a webhook of its own (`notify_url`): the server then "
        "calls URLs its users choose (see docs/security.md).",
    )

    @field_validator("webhooks")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        for index, url in enumerate(value):
            try:
                check_webhook_url(url)
            except ValueError as exc:
                raise ValueError(f"PULLRUN_WEBHOOKS, URL {index + 1}: {exc}") from None
        return value

    @field_validator("webhook_events")
    @classmethod
    def _webhook_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"finished", "started"})
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}: give finished, started or both")
        return value

    @field_validator(
        "webhooks",
        "webhook_events",
        "trusted_proxies",
        "allowed_images",
        "denied_labels",
        "allowed_constraints",
        "allowed_bind_paths",
        "allowed_networks",
        "allowed_port_hosts",
        "allowed_hosts",
        "allowed_origins",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("allowed_bind_paths")
    @classmethod
    def _absolute_bind_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute path")
        return value

    @field_validator("default_memory", "max_memory", "default_cpus", "max_cpus", mode="before")
    @classmethod
    def _none_or_size(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return memory_bytes(value) if str(info.field_name).endswith("memory") else value

    @model_validator(mode="after")
    def _defaults_within_maximums(self) -> Settings:
        pairs = (
            ("default_memory", self.default_memory, "max_memory", self.max_memory),
            ("default_cpus", self.default_cpus, "max_cpus", self.max_cpus),
            ("default_pids_limit", self.default_pids_limit, "max_pids_limit", self.max_pids_limit),
            ("default_timeout", self.default_timeout, "max_timeout", self.max_timeout),
        )
        for default_name, default, max_name, maximum in pairs:
            if maximum is None:
                continue
            if default is None:
                raise ValueError(
                    f"PULLRUN_{max_name.upper()} is set but PULLRUN_{default_name.upper()} is "
                    "none: a run that asks for nothing would have no limit; set both"
                )
            if default > maximum:
                raise ValueError(
                    f"PULLRUN_{default_name.upper()} ({default:g}) is above "
                    f"PULLRUN_{max_name.upper()} ({maximum:g})"
                )
        return self

    @property
    def lends_credentials(self) -> bool:
        """Whether a pull without `registry_auth` gets the server's own credentials."""
        if self.lend_server_credentials is not None:
            return self.lend_server_credentials
        return self.auth == "off"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pullrun.db"

    @property
    def auth_db_path(self) -> Path:
        """Users, API tokens, sessions and the audit trail (backend/auth/store.py)."""
        return self.data_dir / "auth.db"

    @property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    def events_file(self, run_id: str) -> Path:
        """A run's event log: the SSE bytes its subscribers get."""
        return self.events_dir / f"{run_id}.events"
