"""The run policy for the docker-run options (backend/run_options.py): what a
run may mount, join, publish and use. Called by `policy.apply_policy`; every
refusal is a 422 naming the field and the setting.

- `volumes`: a named volume always; a bind (absolute `source`) only at or
  under one of `allowed_bind_paths`, compared as text once `.`, `..` and
  repeated slashes are resolved (`/srv/data/../../etc` is `/etc`); a target
  not `/` and not under /proc; each target once. Paths are kept resolved.
- `network`: only a name in `allowed_networks` (none given: the engine's
  default network, always allowed).
- `ports`: only with `allow_ports`, each on an address of `allowed_port_hosts`.
- `gpus`: only with `allow_gpus`.
"""

from __future__ import annotations

import ipaddress
import posixpath
from typing import Any

from ..models import RunCreate
from ..run_options import PortMapping, Volume
from ..settings import Settings

_FORBIDDEN_TARGETS = ("/proc",)


def _normal(path: str) -> str:
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


def check_options(
    request: RunCreate, settings: Settings
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(problems, updates to the request): volumes' paths resolved."""
    problems: list[tuple[str, str]] = []
    update: dict[str, Any] = {}

    if request.volumes:
        volumes: list[Volume] = []
        targets: set[str] = set()
        allowed = [_normal(p) for p in settings.allowed_bind_paths]
        for volume in request.volumes:
            target = _normal(volume.target)
            source = _normal(volume.source) if volume.is_bind else volume.source
            if target == "/" or any(_under(target, top) for top in _FORBIDDEN_TARGETS):
                problems.append(("volumes", f"target {target!r} may not be / or under /proc"))
            elif target in targets:
                problems.append(("volumes", f"target {target!r} is given twice"))
            targets.add(target)
            if volume.is_bind and not any(_under(source, top) for top in allowed):
                shown = ", ".join(allowed) or "none"
                problems.append(
                    (
                        "volumes",
                        f"host path {source[:256]!r} is not under an allowed bind path "
                        f"(PULLRUN_ALLOWED_BIND_PATHS: {shown})",
                    )
                )
            volumes.append(volume.model_copy(update={"source": source, "target": target}))
        update["volumes"] = volumes

    if request.network is not None and request.network not in settings.allowed_networks:
        shown = ", ".join(settings.allowed_networks) or "none: only the engine's default"
        problems.append(
            (
                "network",
                f"network {request.network!r} is not allowed (PULLRUN_ALLOWED_NETWORKS: {shown})",
            )
        )

    if request.ports:
        if not settings.allow_ports:
            problems.append(("ports", "publishing ports is not allowed (PULLRUN_ALLOW_PORTS)"))
        else:
            problems.extend(_port_problems(request.ports, settings))

    if request.gpus is not None and not settings.allow_gpus:
        problems.append(("gpus", "GPUs are not allowed (PULLRUN_ALLOW_GPUS)"))

    return problems, update


def _port_problems(ports: list[PortMapping], settings: Settings) -> list[tuple[str, str]]:
    hosts = settings.allowed_port_hosts
    for port in ports:
        if not any(_same_address(port.host_ip, host) for host in hosts):
            shown = ", ".join(hosts) or "none"
            return [
                (
                    "ports",
                    f"ports may not be published on {port.host_ip} "
                    f"(PULLRUN_ALLOWED_PORT_HOSTS: {shown})",
                )
            ]
    return []
