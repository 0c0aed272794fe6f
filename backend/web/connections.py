"""Limits on event streams, and the open-file limit they need.

An SSE subscriber holds a socket (and, on a run's stream, the run's event
file) for as long as it listens. `StreamLimits` counts open streams, in total
and per identity, and answers 429 with `Retry-After` past either limit;
`raise_open_file_limit` makes sure, at start, that the process may open the
files its limits allow, or refuses to start saying so.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import SendTimeoutError
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
    ends (done, the client gone, the server stopping, an error).

    Under uvicorn's httptools protocol (what `pullrun serve` runs) it writes
    the body's chunks straight to the connection's transport (`_Direct`): no
    copy of each chunk per subscriber, no trip through the middleware for
    each one. Anywhere else (tests' in-process transports, another server)
    it sends as EventSourceResponse does."""

    def __init__(self, content: AsyncIterator[bytes], slot: StreamSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot
        self._direct: _Direct | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self._direct = _Direct.of(receive)
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()

    async def _stream_response(self, send: Send) -> None:
        if self._direct is None:
            await super()._stream_response(send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        # Direct writes frame the chunks as uvicorn would: only under the chunked
        # encoding it chose at the start (no Content-Length); else send as usual.
        direct = self._direct if self._direct.ready() else None
        async for data in self.body_iterator:
            try:
                chunk = ensure_bytes(data, self.sep)
                if direct is not None:
                    await direct.write(chunk, self.send_timeout)
                else:
                    message = {"type": "http.response.body", "body": chunk, "more_body": True}
                    await self._send_with_timeout(send, message)
            except BaseException:
                # As EventSourceResponse does: close the iterator before the error escapes.
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    with anyio.move_on_after(self._cleanup_timeout, shield=True):
                        with contextlib.suppress(Exception):
                            await aclose()
                raise
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Direct:
    """A uvicorn (httptools) connection's transport, written to directly.

    uvicorn's own `send` joins each chunk with its chunked-encoding frame
    into a new bytes object: with 1,000 subscribers of one run that is 1,000
    copies of every span (issue 12). Here the frame and the span (the very
    bytes object every subscriber shares, backend/storage/fanout.py) go to
    the transport as they are, under the same flow control: wait while the
    transport is paused (at most `send_timeout` seconds, as
    EventSourceResponse does), write nothing once the client has gone.
    """

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle

    @classmethod
    def of(cls, receive: Receive) -> _Direct | None:
        cycle = getattr(receive, "__self__", None)
        if cycle is None or _httptools_cycle() is not type(cycle):
            return None
        return cls(cycle)

    def ready(self) -> bool:
        cycle = self.cycle
        return (
            bool(cycle.response_started and cycle.chunked_encoding) and not cycle.response_complete
        )

    async def write(self, data: bytes, timeout: float | None) -> None:
        cycle = self.cycle
        if cycle.flow.write_paused and not cycle.disconnected:
            with anyio.move_on_after(timeout) as scope:
                await cycle.flow.drain()
            if scope.cancel_called:
                raise SendTimeoutError()
        if cycle.disconnected or not data:
            return
        cycle.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))


_CYCLE_CLASS: list[type] = []


def _httptools_cycle() -> type | None:
    """uvicorn's httptools RequestResponseCycle, when uvicorn is there."""
    if not _CYCLE_CLASS:
        try:
            from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
        except ImportError:  # pragma: no cover - uvicorn[standard] is a dependency
            return None
        _CYCLE_CLASS.append(RequestResponseCycle)
    return _CYCLE_CLASS[0]


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
