"""Which engines pullrun drives: `PULLRUN_ENGINES_FILE` (TOML), or one engine.

Without a file there is one engine, `local`, reached as the docker CLI would
(`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`, or the default
socket). A bad file is a start-up error that names the engine and the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..models import CONSTRAINT, ENGINE_NAME

LOCAL = "local"
PREFERENCE = re.compile(r"spread=(node|engine)\.[A-Za-z0-9_.-]{1,128}")
SCHEMES = ("unix", "tcp", "ssh", "npipe", "http", "https")
MAX_ENGINES = 64
MAX_LABELS = 32


class EnginesFileError(ValueError):
    """The engines file cannot be used; the message names the engine and field."""


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["docker", "swarm"] = "docker"
    host: str | None = Field(None, description="unix://, tcp:// or ssh:// (none: DOCKER_HOST)")
    context: str | None = Field(None, description="a docker CLI context, instead of host")
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_verify: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    max_concurrent_runs: int = Field(4, ge=1, le=1024)
    # kind = "swarm": applied to every run's service (docker service create
    # --constraint / --placement-pref spread=...).
    placement_constraints: list[str] = Field(default_factory=list, max_length=32)
    placement_preferences: list[str] = Field(default_factory=list, max_length=8)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ENGINE_NAME.fullmatch(value):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.partition("://")[0] if "://" in value else ""
        if scheme not in SCHEMES:
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
        parts = urlsplit(value)
        if parts.password is not None or parts.query or parts.fragment:
            # It would be shown in /api/engines and in the engine's own errors.
            raise ValueError(
                "must not carry a password or a query: use ssh keys (the ssh agent) or tls_* files"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key, item in value.items():
            if not key or len(key) > 128 or len(item) > 256:
                raise ValueError(f"label {key[:40]!r}: keys 1-128 and values up to 256 characters")
        return value

    @field_validator("placement_constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        for constraint in value:
            if not CONSTRAINT.fullmatch(constraint):
                raise ValueError(f"{constraint[:80]!r} is not a swarm constraint")
        return value

    @field_validator("placement_preferences")
    @classmethod
    def _preferences(cls, value: list[str]) -> list[str]:
        for preference in value:
            if not PREFERENCE.fullmatch(preference):
                raise ValueError(f"{preference[:80]!r}: only spread=node.labels.<key> (or node.*)")
        return value

    @field_validator("tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if self.host and self.context:
            raise ValueError("give host or context, not both")
        if self.kind != "swarm" and (self.placement_constraints or self.placement_preferences):
            raise ValueError('placement_constraints and placement_preferences need kind = "swarm"')
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        uses_tls = self.tls_ca or self.tls_cert
        if uses_tls and not (self.host or "").startswith(("tcp://", "https://")):
            raise ValueError("tls_* need a tcp:// host")
        if (self.host or "").startswith("tcp://") and not uses_tls and self.tls_verify:
            # The docker CLI would talk plain HTTP here: anyone on the path
            # could drive the engine. Unencrypted only when asked for.
            raise ValueError(
                "a tcp:// host needs tls_ca (and tls_cert/tls_key for a client "
                "certificate); tls_verify = false allows an unencrypted connection"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def scrub(self, text: str) -> str:
        """`text` (an error of the engine's client) with the host as the public form."""
        return text.replace(self.host, self.public_host()) if self.host else text

    def public_host(self) -> str:
        """Where it is, for answers and logs: no user, password or query."""
        if self.context:
            return f"context:{self.context}"
        if not self.host:
            return "DOCKER_HOST or the default socket"
        parts = urlsplit(self.host)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"


def load_engines(path: Path | None, default_slots: int) -> list[EngineConfig]:
    """The engines of `path`, or the single `local` engine without one."""
    if path is None:
        return [EngineConfig(name=LOCAL, max_concurrent_runs=default_slots)]
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise EnginesFileError(f"engines file {path}: cannot read it: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EnginesFileError(f"engines file {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"engines"})
    if unknown:
        raise EnginesFileError(
            f"engines file {path}: unknown table {unknown[0]!r} (only [engines.NAME] tables)"
        )
    tables = data.get("engines")
    if not isinstance(tables, dict) or not tables:
        raise EnginesFileError(f"engines file {path}: no [engines.NAME] table")
    if len(tables) > MAX_ENGINES:
        raise EnginesFileError(f"engines file {path}: at most {MAX_ENGINES} engines")
    return [_engine(path, name, table, default_slots) for name, table in tables.items()]


def _engine(path: Path, name: str, table: Any, default_slots: int) -> EngineConfig:
    where = f"engines file {path}: engine {name!r}"
    if not isinstance(table, dict):
        raise EnginesFileError(f"{where}: must be a table ([engines.{name}])")
    table = {"max_concurrent_runs": default_slots, **table, "name": name}
    try:
        return EngineConfig.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(engine)"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise EnginesFileError(f"{where}, field {field!r}: {message}") from None
