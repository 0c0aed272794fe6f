"""The engine seam: the calls the pipeline and the runner make on an engine.

`DockerEngine` (docker.py) is the real one; `FakeEngine` (fake.py) replays
streams recorded from a real engine, for unit tests. An engine object serves
one run (or one short task) and is closed after it; an `EngineFactory` makes
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..models import RunSpec


class PullStream(Protocol):
    """The engine's pull messages (JSON objects), read to the end.

    `close()` may be called from another thread: it abandons the pull and
    makes a blocked iteration end (or raise) soon.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class OutputStream(Protocol):
    """A container's attach stream: raw bytes, multiplexed frames unless tty."""

    def read(self, timeout: float | None) -> bytes | None:
        """Next bytes; None when `timeout` seconds pass with none; b"" at the end."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def version(self) -> dict[str, Any]:
        """The engine's version answer (`Version`, `ApiVersion`, ...)."""
        ...

    def info(self) -> dict[str, Any]:
        """The engine's /info answer (`NCPU`, `MemTotal`, `OSType`, `Architecture`, ...)."""
        ...

    def image_present(self, image: str) -> bool: ...

    def image_digest(self, image: str) -> str | None: ...

    def pull(
        self,
        image: str,
        *,
        platform: str | None,
        auth: dict[str, str] | None,
        stall_timeout: float,
        lend_credentials: bool = False,
    ) -> PullStream:
        """Start a pull. Errors before the engine's first flush raise here;
        later ones arrive in the stream as `error`/`errorDetail` messages.
        `auth`: this pull's credentials; without them, the server's own
        (its docker config) only when `lend_credentials`."""
        ...

    def create(
        self,
        run_id: str,
        spec: RunSpec,
        name: str | None = None,
        *,
        no_new_privileges: bool = True,
    ) -> str:
        """Create the run's container (labelled as pullrun's), with the spec's
        limits (`pids_limit`, memory, CPUs); its id."""
        ...

    def attach(self, container_id: str) -> OutputStream: ...

    def logs(self, container_id: str, *, follow: bool) -> OutputStream:
        """What the engine's log driver kept of the container's output, from its
        first line: multiplexed (a frame per line) unless tty. A line is in it
        only once it ends (or the container exits). With `follow`, then what
        the container prints, until it exits. Raises when the driver cannot
        be read back (`none`: 501)."""
        ...

    def start(self, container_id: str) -> None: ...

    def wait(self, container_id: str) -> tuple[int, str | None]:
        """Block until the container exits: (exit code, the engine's error message)."""
        ...

    def inspect(self, container_id: str) -> dict[str, Any]: ...

    def stop(self, container_id: str, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        ...

    def remove(self, container_id: str) -> None:
        """Remove the container (and its anonymous volumes); gone already is fine."""
        ...

    def managed_containers(self, run_id: str | None = None) -> list[str]:
        """Ids of pullrun's containers (of one run, or all)."""
        ...


EngineFactory = Callable[[], Engine]
