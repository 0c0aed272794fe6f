"""The readers of benchmark 15 (line latency), each in a process of its own.

`python -m bench.latency_client` takes one JSON command per line on stdin and
answers one JSON line on stdout (as bench.client does):

- `attach`: the docker side. Attaches to a container through the engine's
  socket (`POST /containers/{id}/attach?stream=1&stdout=1&stderr=1`, the
  stream `docker attach` reads and pullrun's relay reads), answers once the
  engine has switched protocols.
- `subscribe`: the pullrun side. Opens `count` SSE subscribers on a run's
  events, answers once every one has its response headers.
- `collect`: waits for every reader to end (the attach stream closes; each
  subscriber gets `done`), then parses what they got and answers with each
  line's arrival time, per reader.

Arrival is stamped with `time.monotonic()` (CLOCK_MONOTONIC, shared by every
process of the machine) first thing in `data_received`, before any parsing:
the bytes are kept with their stamp and parsed only in `collect`, so a
hundred subscribers in one loop do not delay each other's stamps. A line's
arrival is the stamp of the read that completed it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httptools

from backend.engines.frames import FrameDecoder
from backend.storage.reader import EventSplitter, parse_event

from . import client

try:  # the same loop the server runs on; plain asyncio otherwise
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

DOCKER_SOCKET = "/var/run/docker.sock"


class Stamped(asyncio.Protocol):
    """Keeps every read with its arrival time; `ended` when the peer closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.reads: list[tuple[float, bytes]] = []
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # the head is in
        self.ended: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.monotonic(), data))
        if not self.ready.done() and b"\r\n\r\n" in b"".join(d for _, d in self.reads):
            self.ready.set_result(None)

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the response head"))
        if not self.ended.done():
            self.ended.set_result(None)


def _split_head(reads: list[tuple[float, bytes]]) -> tuple[bytes, list[tuple[float, bytes]]]:
    """The response head, and the reads of the body after it."""
    head = b""
    for i, (t, data) in enumerate(reads):
        head += data
        at = head.find(b"\r\n\r\n")
        if at >= 0:
            body = head[at + 4 :]
            rest = ([(t, body)] if body else []) + reads[i + 1 :]
            return head[:at], rest
    return head, []


class Lines:
    """Line texts in arrival order and when each arrived; problems noted."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.times: list[float] = []
        self.read_at: list[float] = []  # SSE: the event's `at` (monotonic, 1 ms steps)
        self.errors: list[str] = []

    def add(self, text: str, t: float) -> None:
        self.texts.append(text)
        self.times.append(t)

    def error(self, message: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(message)

    def summary(self) -> dict[str, Any]:
        return {
            "lines": self.texts,
            "times": self.times,
            "read_at": self.read_at,
            "errors": self.errors,
        }


def parse_attach(reads: list[tuple[float, bytes]]) -> Lines:
    """Multiplexed frames of an attach stream -> lines (stdout and stderr)."""
    out = Lines()
    head, body = _split_head(reads)
    if not head.startswith(b"HTTP/1.1 101"):
        out.error(f"attach answered {head[:80]!r}")
        return out
    frames = FrameDecoder()
    rest = {1: b"", 2: b""}
    for t, data in body:
        for sid, payload in frames.feed(data):
            text = rest.get(sid, b"") + payload
            *whole, rest[sid] = text.split(b"\n")
            for line in whole:
                out.add(line.decode(), t)
    if any(rest.values()):
        out.error(f"unterminated output at the end: {rest!r}")
    return out


class _Body:
    """httptools callbacks: the body's bytes, with the stamp of the read they came in."""

    def __init__(self) -> None:
        self.status = 0
        self.parts: list[tuple[float, bytes]] = []
        self.now = 0.0
        self.complete = False
        self.parser: Any = None
        self._chunk_start = False
        self._skip = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_chunk_header(self) -> None:
        self._chunk_start = True

    def on_body(self, body: bytes) -> None:
        if self._chunk_start:
            self._chunk_start = False
            # sse-starlette sends a keepalive comment as a chunk of its own.
            self._skip = body[:1] == b":"
        if not self._skip:
            self.parts.append((self.now, body))

    def on_message_complete(self) -> None:
        self.complete = True


def parse_sse(reads: list[tuple[float, bytes]]) -> Lines:
    """A run's event stream -> its output lines; ids checked contiguous, `done` last."""
    out = Lines()
    body = _Body()
    body.parser = httptools.HttpResponseParser(body)
    try:
        for t, data in reads:
            body.now = t
            body.parser.feed_data(data)
    except httptools.HttpParserError as exc:
        out.error(f"HTTP: {exc}")
        return out
    if body.status != 200 or not body.complete:
        out.error(f"status {body.status}, complete {body.complete}")
    splitter = EventSplitter()
    # `at` is wall-clock time: on the monotonic clock the stamps are on.
    wall_offset = time.time() - time.monotonic()
    next_id = 1
    done = False
    for t, data in body.parts:
        for block in splitter.feed(data):
            event = parse_event(block)
            if event is None:
                out.error(f"malformed event {block[:80]!r}")
                continue
            if event.number != next_id:
                out.error(f"event id {event.number}, expected {next_id}")
            next_id = event.number + 1
            if done:
                out.error(f"event {event.number} after done")
            if event.type == "done":
                done = True
            elif event.type == "log":
                data_ = event.data
                if data_.get("partial") or data_["first"] != len(out.texts) + 1:
                    out.error(f"log event {event.number}: first {data_['first']}, partial")
                at = datetime.fromisoformat(data_["at"]).timestamp() - wall_offset
                for line in data_["lines"]:
                    out.add(line, t)
                    out.read_at.append(at)
    if not done:
        out.error("no done event")
    return out


class Readers:
    def __init__(self) -> None:
        self.attached: list[Stamped] = []
        self.subscribers: list[Stamped] = []

    async def attach(self, container: str) -> dict[str, Any]:
        request = (
            f"POST /containers/{container}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        reader = Stamped(request)
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: reader, DOCKER_SOCKET)
        await reader.ready
        self.attached.append(reader)
        return {"errors": []}

    async def subscribe(
        self, base: str, run_id: str, count: int, token: str | None = None
    ) -> dict[str, Any]:
        host, _, port = base.removeprefix("http://").partition(":")
        lines = [
            f"GET /api/runs/{run_id}/events HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Connection: close",
        ]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        loop = asyncio.get_running_loop()

        async def one() -> Stamped:
            sub = Stamped(request)
            await loop.create_connection(lambda: sub, host, int(port))
            await sub.ready
            return sub

        self.subscribers += await asyncio.gather(*(one() for _ in range(count)))
        return {"errors": []}

    async def collect(self, timeout: float) -> dict[str, Any]:
        readers = self.attached + self.subscribers
        try:
            await asyncio.wait_for(asyncio.gather(*(r.ended for r in readers)), timeout)
        except TimeoutError:
            return {"errors": [f"the readers did not end within {timeout} s"]}
        attached = [parse_attach(r.reads).summary() for r in self.attached]
        subscribers = [parse_sse(r.reads).summary() for r in self.subscribers]
        self.attached, self.subscribers = [], []
        return {"attached": attached, "subscribers": subscribers, "errors": []}


def main() -> None:
    readers = Readers()

    async def answer(command: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await getattr(readers, command.pop("cmd"))(**command)
        return result

    client.main(answer)


if __name__ == "__main__":
    main()
