"""The client process of the benchmarks: HTTP requests and SSE subscribers.

It runs apart from the server (and from the bench driver), so subscribers
never share the server's CPU accounting. The driver (`bench.driver`) sends it
one JSON command per line on stdin; it answers one JSON line on stdout. Each
command times itself with `time.monotonic()`, so no pipe or process start-up
is ever inside a measurement.

Clients are asyncio protocols with httptools' response parser (the C parser
uvicorn uses): one event loop runs 100 concurrent subscribers without the
client becoming the bottleneck. A subscriber is either

- *parsing*: splits every event, checks ids are 1, 2, 3, ... with no gap,
  decodes each `log` event's JSON and checks its line numbers continue the
  previous ones (partial lines joined), and keeps every line for a content
  check after the clock has stopped; or
- *counting*: a CRC-32 and a byte count of the event bytes (keepalive
  comments skipped). All subscribers of a run, the parsing one included,
  must end with the same CRC and count as the parsing one: they then
  received exactly the lines it checked, once each, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

from backend.storage.reader import EventSplitter, Joined, LineJoiner, parse_event

try:  # the same loop the server runs on; plain asyncio otherwise
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


# API tokens by server base URL: a command's `token` (the driver adds the token
# of the server it started) is sent by every request to that server.
CREDENTIALS: dict[str, str] = {}


# -- sinks: what a response body goes into ------------------------------------------


class ByteSink:
    """CRC-32 and length of the body (keepalive comments already removed)."""

    def __init__(self) -> None:
        self.crc = 0
        self.nbytes = 0

    def feed(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.nbytes += len(data)

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {"crc": self.crc, "nbytes": self.nbytes}


class BodySink(ByteSink):
    """Keeps the whole body (small JSON answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        super().feed(data)
        self.parts.append(data)

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


class EventSink(ByteSink):
    """Parses the stream event by event (backend.storage.reader, as the server
    reads its own files) and checks ids and line numbers."""

    def __init__(
        self,
        after: int = 0,
        on_event: Callable[[str, Any], None] | None = None,
        keep_lines: bool = True,
    ) -> None:
        super().__init__()
        self._splitter = EventSplitter()
        self._joiner = LineJoiner()
        self.next_id = after + 1
        self.lines: list[str] = []  # line n is lines[n - 1]: one stream only
        self.keep_lines = keep_lines
        self.types: dict[str, int] = {}
        self.done: Any = None
        self.errors: list[str] = []
        self.on_event = on_event

    def feed(self, data: bytes) -> None:
        super().feed(data)
        for block in self._splitter.feed(data):
            self._event(block)

    def _error(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)

    def _event(self, block: bytes) -> None:
        if not block.startswith(b"id: ") or block.count(b"\n") != 2:
            self._error(f"malformed event: {block[:120]!r}")
            return
        event = parse_event(block)
        if event is None:
            self._error(f"malformed event: {block[:120]!r}")
            return
        event_id = event.number
        if event_id != self.next_id:
            self._error(f"event id {event_id}, expected {self.next_id}")
        self.next_id = event_id + 1
        kind = event.type
        self.types[kind] = self.types.get(kind, 0) + 1
        if self.done is not None:
            self._error(f"event {event_id} ({kind}) after done")
        if kind == "log":
            self._log(event.data)
            if self.on_event is not None:
                self.on_event(kind, None)
            return
        if kind == "done":
            self.done = event.data
        if self.on_event is not None:
            self.on_event(kind, event.data)

    def _log(self, data: dict[str, Any]) -> None:
        if not data["lines"]:
            self._error(f"empty log event at line {data['first']}")
            return
        if self._joiner.open_count > 1:
            # Partial lines of two streams at once: the benchmarks print on one
            # stream only, so this would be a bug worth seeing.
            self._error("partial lines of two streams at once")
        self._keep(self._joiner.feed(data))

    def _keep(self, joined: Joined) -> None:
        """What the subscriber does with one event's lines: keeps them, here."""
        if not self.keep_lines:
            return
        if joined.continued is not None:
            self.lines[joined.continued.n - 1] = joined.continued.text
        self.lines.extend(joined.texts)
        if joined.opened is not None:
            self.lines.append(joined.opened.text)

    def close(self) -> None:
        if self._splitter.rest.strip(b"\n"):
            self._error(f"unterminated event at the end: {self._splitter.rest[:120]!r}")

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "events": self.next_id - 1,
            "types": self.types,
            "lines": self._joiner.total,
            "done": self.done,
            "errors": (self.errors + self._joiner.problems)[:20],
        }


# -- one HTTP/1.1 exchange -------------------------------------------------------------


class Exchange(asyncio.Protocol):
    """Send one request, parse the response into a sink, note when it ended."""

    def __init__(self, request: bytes, sink: ByteSink) -> None:
        self.request = request
        self.sink = sink
        self.parser = httptools.HttpResponseParser(self)
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.t_headers = 0.0
        self.t_end = 0.0
        self._chunk_start = False
        self._skip = False
        self.transport: asyncio.Transport | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # a protocol error: report it
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(ConnectionError("connection closed before the response ended"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection lost before the response ended"))

    def _fail(self, exc: BaseException) -> None:
        if not self.finished.done():
            self.finished.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.t_headers = time.monotonic()

    def on_chunk_header(self) -> None:
        self._chunk_start = True

    def on_body(self, body: bytes) -> None:
        if self._chunk_start:
            self._chunk_start = False
            # sse-starlette sends a keepalive comment as a chunk of its own.
            self._skip = body[:1] == b":"
        if not self._skip:
            self.sink.feed(body)

    def on_message_complete(self) -> None:
        self.t_end = time.monotonic()
        self.sink.close()
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def http(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    sink: ByteSink | None = None,
    headers: dict[str, str] | None = None,
) -> Exchange:
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if base in CREDENTIALS:
        lines.append(f"Authorization: Bearer {CREDENTIALS[base]}")
    payload = b""
    if body is not None:
        payload = orjson.dumps(body)
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    if sink is not None and isinstance(sink, EventSink):
        lines.append("Accept: text/event-stream")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    exchange = Exchange(request, sink if sink is not None else BodySink())
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: exchange, host, port)
    await exchange.finished
    return exchange


async def post_run(base: str, body: dict[str, Any]) -> dict[str, Any]:
    exchange = await http(base, "POST", "/api/runs", body)
    assert isinstance(exchange.sink, BodySink)
    if exchange.status != 201:
        raise RuntimeError(f"POST /api/runs: {exchange.status} {exchange.sink.body[:300]!r}")
    record: dict[str, Any] = orjson.loads(exchange.sink.body)
    return record


def _seq_check(lines: list[str], count: int) -> str | None:
    """None when `lines` is exactly "1".."count"."""
    if len(lines) != count:
        return f"{len(lines)} lines, expected {count}"
    expected = [str(i) for i in range(1, count + 1)]
    if lines != expected:
        bad = next(i for i, (a, b) in enumerate(zip(lines, expected, strict=True)) if a != b)
        return f"line {bad + 1} is {lines[bad]!r}, expected {expected[bad]!r}"
    return None


# -- commands --------------------------------------------------------------------------


async def cmd_run(
    base: str,
    body: dict[str, Any],
    clients: int = 1,
    seq: int | None = None,
    expect: list[str] | None = None,
) -> dict[str, Any]:
    """POST a run and follow it with `clients` subscribers; client 0 parses.

    elapsed: from just before the POST to the end of the slowest subscriber's
    response (which ends right after `done`).
    """
    t0 = time.monotonic()
    record = await post_run(base, body)
    path = record["links"]["events"]
    parser = EventSink(keep_lines=seq is not None or expect is not None)
    sinks: list[ByteSink] = [parser] + [ByteSink() for _ in range(clients - 1)]
    exchanges = await asyncio.gather(*(http(base, "GET", path, sink=s) for s in sinks))
    elapsed = max(e.t_end for e in exchanges) - t0
    errors = list(parser.errors)
    statuses = {e.status for e in exchanges}
    if statuses != {200}:
        errors.append(f"statuses {statuses}")
    mismatched = sum(1 for s in sinks if (s.crc, s.nbytes) != (parser.crc, parser.nbytes))
    if mismatched:
        errors.append(f"{mismatched} of {clients} subscribers got other bytes than client 0")
    if parser.done is None:
        errors.append("no done event")
    if seq is not None:
        problem = _seq_check(parser.lines, seq)
        if problem:
            errors.append(problem)
    if expect is not None and parser.lines != expect:
        errors.append(f"output {parser.lines[:3]!r}, expected {expect!r}")
    return {
        "elapsed": elapsed,
        "run_id": record["id"],
        "clients": clients,
        "first_byte": min(e.t_headers for e in exchanges) - t0,
        "parser": parser.summary(),
        "errors": errors,
    }


async def cmd_many(
    base: str, body: dict[str, Any], count: int, expect: list[str]
) -> dict[str, Any]:
    """POST `count` runs at once, each followed by a parsing subscriber."""

    async def one() -> tuple[EventSink, float]:
        record = await post_run(base, body)
        sink = EventSink()
        exchange = await http(base, "GET", record["links"]["events"], sink=sink)
        return sink, exchange.t_end

    t0 = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors: list[str] = []
    ends: list[float] = []
    for result in results:
        if isinstance(result, BaseException):
            errors.append(f"{type(result).__name__}: {result}")
            continue
        sink, t_end = result
        ends.append(t_end)
        errors.extend(sink.errors)
        done = sink.done or {}
        if done.get("status") != "succeeded":
            errors.append(f"run ended {done.get('status')}: {done.get('error')}")
        elif sink.lines != expect:
            errors.append(f"output {sink.lines[:3]!r}, expected {expect!r}")
    return {"elapsed": (max(ends) - t0) if ends else None, "errors": errors[:20]}


async def cmd_replay(base: str, run_id: str) -> dict[str, Any]:
    """A late subscriber reads a finished run's whole stream."""
    sink = ByteSink()
    t0 = time.monotonic()
    exchange = await http(base, "GET", f"/api/runs/{run_id}/events", sink=sink)
    errors = [] if exchange.status == 200 else [f"status {exchange.status}"]
    return {"elapsed": exchange.t_end - t0, **sink.summary(), "errors": errors}


def cmd_cat(path: str) -> dict[str, Any]:
    """`cat` of a file into a pipe read to the end: same CRC work per byte."""
    sink = ByteSink()
    t0 = time.monotonic()
    with subprocess.Popen(["cat", path], stdout=subprocess.PIPE, bufsize=0) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            sink.feed(chunk)
        elapsed = time.monotonic() - t0
        rc = proc.wait()
    return {"elapsed": elapsed, **sink.summary(), "errors": [] if rc == 0 else [f"cat: {rc}"]}


async def cmd_pull(base: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a run that pulls; time to the `pull` event completing the last layer."""
    marks: dict[str, float] = {}

    def on_event(kind: str, data: Any) -> None:
        if kind != "pull" or data is None:
            return
        overall = data.get("overall") or {}
        if (
            "last_layer" not in marks
            and data.get("status") == "Pull complete"
            and overall.get("layers_done") == overall.get("layers_total")
        ):
            marks["last_layer"] = time.monotonic()
        if "fraction_1" not in marks and overall.get("fraction") == 1:
            marks["fraction_1"] = time.monotonic()

    t0 = time.monotonic()
    record = await post_run(base, body)
    sink = EventSink(on_event=on_event)
    await http(base, "GET", record["links"]["events"], sink=sink)
    errors = list(sink.errors)
    done = sink.done or {}
    if done.get("status") != "succeeded":
        errors.append(f"run ended {done.get('status')}: {done.get('error')}")
    if "last_layer" not in marks:
        errors.append("no pull event completed the last layer")
    return {
        "elapsed": marks.get("last_layer", t0) - t0,
        "fraction_1": marks.get("fraction_1", t0) - t0,
        "pull_events": sink.types.get("pull", 0),
        "run_id": record["id"],
        "errors": errors,
    }


async def cmd_get(base: str, path: str, count: int) -> dict[str, Any]:
    """`count` sequential GETs (a new connection each); their latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    for _ in range(count):
        t0 = time.monotonic()
        exchange = await http(base, "GET", path, headers={"Accept": "text/html"})
        latencies.append(exchange.t_end - t0)
        if exchange.status != 200:
            errors.append(f"{path}: {exchange.status}")
    return {"latencies": latencies, "bytes": exchange.sink.nbytes, "errors": errors[:5]}


async def dispatch(command: dict[str, Any]) -> dict[str, Any]:
    name = command.pop("cmd")
    token = command.pop("token", None)
    if token and "base" in command:
        CREDENTIALS[command["base"]] = token
    if name == "run":
        return await cmd_run(**command)
    if name == "many":
        return await cmd_many(**command)
    if name == "replay":
        return await cmd_replay(**command)
    if name == "cat":
        return cmd_cat(**command)
    if name == "pull":
        return await cmd_pull(**command)
    if name == "get":
        return await cmd_get(**command)
    raise ValueError(f"unknown command {name!r}")


Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(answer: Answer = dispatch) -> None:
    """Read a JSON command a line from stdin, write each answer a line to stdout
    (an exception is an answer with `errors`). The client modules share it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    while line := await reader.readline():
        try:
            result = await answer(json.loads(line))
        except Exception as exc:
            result = {"errors": [f"{type(exc).__name__}: {exc}"], "elapsed": None}
        out.write(json.dumps(result) + "\n")
        out.flush()


def main(answer: Answer = dispatch) -> None:
    if uvloop is not None:
        uvloop.run(serve(answer))
    else:  # pragma: no cover
        asyncio.run(serve(answer))
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    main()
