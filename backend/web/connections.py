"""Limits on event streams, and the open-file limit they need.

An SSE subscriber holds a socket (and, on a run's stream, the run's event
file) for as long as it listens. `StreamLimits` counts open streams, in total
and per identity, and answers 429 with `Retry-After` past either limit;
`raise_open_file_limit` makes sure, at start, that the process may open the
files its limits allow, or refuses to start saying so.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from ..auth import Identity
from ..errors import TooManyRequests
from ..settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds a refused subscriber is told to wait
# Open files a server needs besides its streams: the listening socket, the
# databases, logs, the requests being answered (HTTP keep-alive included), ...
BASE_FILES = 256
FILES_PER_STREAM = 2  # its socket, and the run's event file it reads
FILES_PER_RUN = 8  # engine connections (pull, attach, wait, stop), the event file


class StreamSlot:
    """One open stream's place; `release()` is idempotent."""

    def __init__(self, limits: StreamLimits, who: str) -> None:
        self._limits = limits
        self.who = who
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limits._release(self.who)


class StreamLimits:
    """Counts the event streams open, in total and per identity (loop thread only)."""

    def __init__(self, total: int, per_identity: int) -> None:
        self.total = total
        self.per_identity = per_identity
        self.open = 0
        self.by_identity: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamLimits:
        return cls(settings.max_sse_connections, settings.max_sse_connections_per_identity)

    def acquire(self, identity: Identity) -> StreamSlot:
        """A slot for one more stream of `identity`, or TooManyRequests (429)."""
        who = identity.name
        if self.open >= self.total:
            raise TooManyRequests(
                f"{self.open} event streams are open, the most this server allows "
                "(PULLRUN_MAX_SSE_CONNECTIONS); try again later",
                retry_after=RETRY_AFTER,
            )
        if self.by_identity[who] >= self.per_identity:
            raise TooManyRequests(
                f"{who} has {self.by_identity[who]} event streams open, the most one identity "
                "may have (PULLRUN_MAX_SSE_CONNECTIONS_PER_IDENTITY); close one and try again",
                retry_after=RETRY_AFTER,
            )
        self.open += 1
        self.by_identity[who] += 1
        return StreamSlot(self, who)

    def _release(self, who: str) -> None:
        self.open -= 1
        self.by_identity[who] -= 1
        if self.by_identity[who] <= 0:
            del self.by_identity[who]


class LimitedEventSource(EventSourceResponse):
    """An EventSourceResponse that gives its slot back when it ends, however it
    ends (done, the client gone, the server stopping, an error)."""

    def __init__(self, content: AsyncIterator[bytes], slot: StreamSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


# -- open files -------------------------------------------------------------------------


def open_files_needed(settings: Settings) -> int:
    """Open files the server may need with its limits all reached."""
    return (
        BASE_FILES
        + FILES_PER_STREAM * settings.max_sse_connections
        + FILES_PER_RUN * settings.max_concurrent_runs
    )


def raise_open_file_limit(settings: Settings) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the
    soft limit now in force. RuntimeError, saying what to change, when even
    the hard limit is below what the configured limits need."""
    needed = open_files_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"the open-file limit is too low: the configured limits need {needed} open files "
            f"(PULLRUN_MAX_SSE_CONNECTIONS={settings.max_sse_connections} streams, "
            f"PULLRUN_MAX_CONCURRENT_RUNS={settings.max_concurrent_runs} runs) but the hard "
            f"limit is {hard}. Raise it (`ulimit -Hn`, LimitNOFILE= in a systemd unit, "
            "`--ulimit nofile=` for a container) or lower those settings."
        )
    # An unlimited hard limit cannot be a soft one: the kernel caps it (nr_open).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed, 1 << 20)
    if soft == resource.RLIM_INFINITY or (target != resource.RLIM_INFINITY and soft >= target):
        return soft
    for candidate in (target, needed):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError):
            continue
        return candidate
    if soft < needed:
        raise RuntimeError(
            f"could not raise the open-file limit from {soft} to the {needed} the configured "
            "limits need; raise it before starting, or lower PULLRUN_MAX_SSE_CONNECTIONS"
        )
    return soft


def get_stream_limits(request: Request) -> StreamLimits:
    limits: StreamLimits = request.app.state.stream_limits
    return limits


StreamLimitsDep = Annotated[StreamLimits, Depends(get_stream_limits)]
