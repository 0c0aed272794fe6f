"""The docker-run options of a run request: `volumes` (`-v`), `network`
(`--network`), `ports` (`-p`) and `gpus` (`--gpus`). Their shapes and input
limits are here; what the server allows of them is the run policy
(backend/runs/run_options_policy.py).

Each option takes an object (what a run's `spec` shows) or, for the CLI and for
people who know docker's, the string `docker run` takes:

- a volume `{"source", "target", "read_only"}`, or `SOURCE:TARGET[:ro|:rw]`;
  a `source` that starts with `/` is a host path (a bind), anything else the
  name of a volume (created by the engine when it does not exist);
- a port `{"container_port", "host_port", "host_ip", "protocol"}`, or
  `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]` (`host_ip` 127.0.0.1 and a
  free host port when not given);
- `gpus`: `all`, a count (`2`) or `device=0,1` (ids or UUIDs), as `--gpus`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_VOLUMES = 32
MAX_PORTS = 32
MAX_PATH_LENGTH = 4096
# docker's rule for a volume's name (daemon/names: RestrictedNamePattern).
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,254}", re.ASCII)
# docker's rule for a network's name, bounded.
NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)
_GPU_ID = r"[A-Za-z0-9_.:-]{1,128}"
GPUS = re.compile(rf"all|[1-9][0-9]{{0,3}}|device={_GPU_ID}(,{_GPU_ID}){{0,63}}")
_PORT_STRING = re.compile(
    r"(?:(?P<ip>\[[0-9A-Fa-f:.]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d{0,5}):)?(?P<container>\d{1,5})"
    r"(?:/(?P<protocol>tcp|udp))?",
    re.ASCII,
)
DEFAULT_PORT_HOST = "127.0.0.1"


def _plain_path(value: str, what: str) -> str:
    if len(value) > MAX_PATH_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_PATH_LENGTH} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError(f"{what} may not contain control characters")
    return value


class Volume(BaseModel):
    """A named volume (`source` a name) or a bind of a host path (`source` absolute)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="A volume's name, or an absolute host path (a bind).")
    target: str = Field(description="Where it appears in the container: an absolute path.")
    read_only: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        _plain_path(value, "source")
        if value.startswith("/"):
            return value
        if not VOLUME_NAME.fullmatch(value):
            raise ValueError(
                "must be an absolute host path or a volume's name "
                "([A-Za-z0-9][A-Za-z0-9_.-]+, at most 255 characters)"
            )
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        _plain_path(value, "target")
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


def parse_volume(value: Any) -> Any:
    """`SOURCE:TARGET[:ro|:rw]` -> a Volume's fields; other values pass through."""
    if not isinstance(value, str):
        return value
    parts = value.split(":")
    mode = None
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(
            "a volume is SOURCE:TARGET[:ro|:rw] (a path with ':' needs the object form)"
        )
    return {"source": parts[0], "target": parts[1], "read_only": mode == "ro"}


class PortMapping(BaseModel):
    """A container port published on the engine's host (`docker run -p`)."""

    model_config = ConfigDict(extra="forbid")

    container_port: int = Field(ge=1, le=65535)
    host_port: int | None = Field(
        None, ge=1, le=65535, description="None: a free port the engine picks."
    )
    host_ip: str = Field(DEFAULT_PORT_HOST, description="The address it is published on.")
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ValueError("must be an IP address, e.g. 127.0.0.1") from None


def parse_port(value: Any) -> Any:
    """`[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` -> a PortMapping's fields."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"container_port": value}
    if not isinstance(value, str):
        return value
    match = _PORT_STRING.fullmatch(value.strip())
    if match is None:
        raise ValueError("a port is [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]")
    fields: dict[str, Any] = {"container_port": int(match["container"])}
    if match["host"]:
        fields["host_port"] = int(match["host"])
    if match["ip"]:
        fields["host_ip"] = match["ip"]
    if match["protocol"]:
        fields["protocol"] = match["protocol"]
    return fields


def check_volumes(value: list[Volume]) -> list[Volume]:
    if len(value) > MAX_VOLUMES:
        raise ValueError(f"at most {MAX_VOLUMES} volumes")
    return value


def check_ports(value: list[PortMapping]) -> list[PortMapping]:
    if len(value) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports")
    seen: set[tuple[str, int, str]] = set()
    for port in value:
        if port.host_port is None:
            continue
        key = (port.host_ip, port.host_port, port.protocol)
        if key in seen:
            raise ValueError(f"host port {port.host_port}/{port.protocol} is given twice")
        seen.add(key)
    return value


def check_network(value: str | None) -> str | None:
    if value is not None and not NETWORK_NAME.fullmatch(value):
        raise ValueError(
            "must be a network's name: 1-128 letters, digits, '.', '_' or '-' "
            "(none: the engine's default network)"
        )
    return value


def check_gpus(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None and (not isinstance(value, str) or not GPUS.fullmatch(value)):
        raise ValueError("must be `all`, a count (`2`) or `device=ID[,ID...]`, as docker --gpus")
    return value


def device_requests(gpus: str | None) -> list[dict[str, Any]] | None:
    """`--gpus` as the engine's HostConfig.DeviceRequests (what the docker CLI sends)."""
    if gpus is None:
        return None
    request: dict[str, Any] = {"Driver": "", "Capabilities": [["gpu"]], "Options": {}}
    if gpus == "all":
        request.update(Count=-1, DeviceIDs=None)
    elif gpus.startswith("device="):
        request.update(Count=0, DeviceIDs=gpus.removeprefix("device=").split(","))
    else:
        request.update(Count=int(gpus), DeviceIDs=None)
    return [request]


def engine_mounts(volumes: list[Volume]) -> list[dict[str, Any]] | None:
    """`volumes` as the engine's HostConfig.Mounts. A bind's host path must
    exist (the engine refuses it otherwise; it is never created)."""
    if not volumes:
        return None
    return [
        {
            "Type": "bind" if v.is_bind else "volume",
            "Source": v.source,
            "Target": v.target,
            "ReadOnly": v.read_only,
        }
        for v in volumes
    ]


def port_bindings(ports: list[PortMapping]) -> dict[str, list[dict[str, str]]] | None:
    """`ports` as the engine's HostConfig.PortBindings (empty HostPort: a free one)."""
    if not ports:
        return None
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        host = {"HostIp": port.host_ip, "HostPort": str(port.host_port or "")}
        bindings.setdefault(f"{port.container_port}/{port.protocol}", []).append(host)
    return bindings


def host_config_options(
    volumes: list[Volume], network: str | None, ports: list[PortMapping], gpus: str | None
) -> dict[str, Any]:
    """The HostConfig keys of the docker-run options, only those a run asks for."""
    options: dict[str, Any] = {
        "Mounts": engine_mounts(volumes),
        "NetworkMode": network,
        "PortBindings": port_bindings(ports),
        "DeviceRequests": device_requests(gpus),
    }
    return {key: value for key, value in options.items() if value is not None}


def volume_text(volume: Volume) -> str:
    """A volume as `docker run -v` writes it (the form's "Run again")."""
    return f"{volume.source}:{volume.target}" + (":ro" if volume.read_only else "")


def port_text(port: PortMapping) -> str:
    """A port as `docker run -p` writes it: `127.0.0.1:8080:80`, `127.0.0.1::53/udp`."""
    host = f"[{port.host_ip}]" if ":" in port.host_ip else port.host_ip
    text = f"{host}:{port.host_port or ''}:{port.container_port}"
    return text + ("/udp" if port.protocol == "udp" else "")
