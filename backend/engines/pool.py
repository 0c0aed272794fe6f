"""The engines pullrun drives, and whether each one answers.

One `EngineHandle` per engine of the engines file: its config, the factory
that makes clients for it, and what its last health check found (state,
version, platform, CPUs, memory, the last error). A thread per engine pings it
every `interval` seconds, every `down_interval` while it is down, and calls
`on_change` when its state or identity changes. A thread per engine: one
engine that hangs (a host that drops packets) never delays the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import now_rfc3339
from .config import EngineConfig
from .docker import engine_message
from .protocol import EngineFactory

log = logging.getLogger(__name__)

UP = "up"
DOWN = "down"
UNKNOWN = "unknown"
DOWN_INTERVAL = 1.0


@dataclass
class EngineHandle:
    config: EngineConfig
    factory: EngineFactory  # clients for runs
    probe: EngineFactory  # clients for health checks (a short timeout)
    state: str = UNKNOWN
    version: str | None = None
    api_version: str | None = None
    os: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory: int | None = None
    last_error: str | None = None
    checked_at: str | None = None
    nodes: list[dict[str, Any]] | None = None  # a swarm's, from its last check
    swarm_node_id: str | None = None  # a docker engine that is a swarm node: its id
    # Kept by the runner, under its lock.
    active: int = 0
    placed_seq: int = 0  # when it last took a run: ties go round robin
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def slots(self) -> int:
        return self.config.max_concurrent_runs

    @property
    def free(self) -> int:
        return max(0, self.slots - self.active)

    @property
    def up(self) -> bool:
        return self.state == UP

    def platform_matches(self, platform: str) -> bool | None:
        """Whether `os[/arch[/variant]]` is this engine's; None while unknown."""
        if self.os is None:
            return None
        os_, _, rest = platform.lower().partition("/")
        arch = rest.partition("/")[0]
        if os_ != self.os.lower():
            return False
        return not arch or arch == (self.arch or "").lower()

    def view(self, queued: int = 0) -> dict[str, Any]:
        """What `/api/engines` and `engine` events show: no secrets."""
        return {
            "name": self.name,
            "kind": self.config.kind,
            "host": self.config.public_host(),
            "labels": dict(self.config.labels),
            "state": self.state,
            "version": self.version,
            "api_version": self.api_version,
            "os": self.os,
            "arch": self.arch,
            "cpus": self.cpus,
            "memory": self.memory,
            "max_concurrent_runs": self.slots,
            "active_runs": self.active,
            "queued_runs": queued,
            "last_error": self.last_error,
            "checked_at": self.checked_at,
            "nodes": self.nodes,
        }


ChangeHook = Callable[[EngineHandle], None]


def probe_of(factory: EngineFactory) -> EngineFactory:
    """The health-check client factory of a run factory: its `probe` where it
    has one (the fake engine's, which the tests do not count), else itself."""
    probe = getattr(factory, "probe", None)
    return probe if callable(probe) else factory


class EnginePool:
    def __init__(
        self,
        engines: Sequence[tuple[EngineConfig, EngineFactory, EngineFactory]],
        *,
        interval: float = 5.0,
        down_interval: float = DOWN_INTERVAL,
        on_change: ChangeHook | None = None,
    ) -> None:
        if not engines:
            raise ValueError("at least one engine")
        self.handles: dict[str, EngineHandle] = {
            config.name: EngineHandle(config, factory, probe) for config, factory, probe in engines
        }
        self.interval = interval
        self.down_interval = min(down_interval, interval)
        self.on_change = on_change
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __iter__(self) -> Iterator[EngineHandle]:
        return iter(self.handles.values())

    def __len__(self) -> int:
        return len(self.handles)

    def get(self, name: str | None) -> EngineHandle | None:
        if name is None:
            return next(iter(self.handles.values())) if len(self.handles) == 1 else None
        return self.handles.get(name)

    @property
    def first(self) -> EngineHandle:
        return next(iter(self.handles.values()))

    # -- health ------------------------------------------------------------------------

    def check(self, handle: EngineHandle) -> bool:
        """Ping the engine now; True when it answers. Calls `on_change` on a change."""
        before = (handle.state, handle.version, handle.os, handle.arch, handle.cpus)
        try:
            with handle.probe() as engine:
                version = engine.version()
                info = engine.info()
                nodes_of = getattr(engine, "nodes", None)
                nodes = nodes_of() if handle.config.kind == "swarm" and nodes_of else None
        except Exception as exc:
            handle.state = DOWN
            handle.last_error = handle.config.scrub(engine_message(exc))
        else:
            handle.state = UP
            handle.last_error = None
            handle.version = _str(version.get("Version"))
            handle.api_version = _str(version.get("ApiVersion"))
            handle.os = _str(version.get("Os") or info.get("OSType"))
            handle.arch = _str(version.get("Arch"))
            handle.cpus = _int(info.get("NCPU"))
            handle.memory = _int(info.get("MemTotal"))
            handle.nodes = nodes
            swarm = info.get("Swarm") or {}
            active = swarm.get("LocalNodeState") == "active"
            handle.swarm_node_id = (
                str(swarm.get("NodeID")) if active and swarm.get("NodeID") else None
            )
        handle.checked_at = now_rfc3339()
        after = (handle.state, handle.version, handle.os, handle.arch, handle.cpus)
        if after != before:
            if handle.state == DOWN:
                log.warning("engine %s is down: %s", handle.name, handle.last_error)
            else:
                log.info("engine %s is %s (%s)", handle.name, handle.state, handle.version)
            self._changed(handle)
        return handle.up

    def suspect(self, name: str) -> None:
        """A run met a failure that may mean the engine went away: check it now."""
        handle = self.handles.get(name)
        if handle is not None:
            handle.wake.set()

    def _changed(self, handle: EngineHandle) -> None:
        if self.on_change is not None:
            try:
                self.on_change(handle)
            except Exception:
                log.exception("engine %s: reporting its change failed", handle.name)

    def start(self) -> None:
        """Check every engine once (so the first placement knows them), then go on
        checking each in the background."""
        first = [threading.Thread(target=self.check, args=(h,), daemon=True) for h in self]
        for thread in first:
            thread.start()
        for thread in first:
            thread.join()
        for handle in self.handles.values():
            thread = threading.Thread(
                target=self._watch, args=(handle,), name=f"engine-{handle.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _watch(self, handle: EngineHandle) -> None:
        while not self._stop.is_set():
            handle.wake.wait(self.interval if handle.up else self.down_interval)
            handle.wake.clear()
            if self._stop.is_set():
                return
            self.check(handle)

    def stop(self) -> None:
        """Stop checking. Not joined: a check hung on an unreachable host must
        not hold up a shutdown (the threads are daemons and end after it)."""
        self._stop.set()
        for handle in self.handles.values():
            handle.wake.set()


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
