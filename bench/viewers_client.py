"""Benchmark 14's subscribers: one process's share of the many viewers of one run.

`python -m bench.viewers_client`, driven over a pipe as `bench.client` is
(one JSON command per line on stdin, one JSON answer per line on stdout). The
driver starts several of these so that 1,000 subscribers are not bound by one
Python process's CPU; they all stamp with `time.monotonic()` (CLOCK_MONOTONIC,
one clock for every process on the machine), so the driver can time from the
moment it opened the run's gate to the last subscriber's end.

Commands:

- `connect`: open `count` subscribers to `path` (the first one parsing, as
  benchmark 2's client 0, when `parse` is set; the others counting: a digest
  and a byte count of the body) and answer once every one has its response
  headers. They go on reading in the background.
- `wait`: wait for every subscriber of the last `connect` to end; answer
  their end times, the distinct (digest, byte count) pairs with how many had
  each, and the parser's summary (its lines checked against 1..`seq`, and
  its own digest and count of the same body).

A counting subscriber (`Counter`) is as cheap as an honest check allows, for
1,000 of them share the server's 2 cores: an `asyncio.BufferedProtocol` that
receives straight into one preallocated buffer shared by every subscriber of
the process (the loop fills and hands over one socket's read at a time),
removes the HTTP chunked framing by hand on memoryview slices, skips the
keepalive comments (a chunk of their own whose first byte is `:`, as
`bench.client.Exchange` skips them) and feeds every other body byte, in
place, to a digest: XXH3-128 (`xxhash`, seven times cheaper here than
zlib's CRC-32, still a checksum of every byte), or CRC-32 where xxhash is
missing. The parsing subscriber stays `bench.client`'s parser, and digests
the body it parsed the same way: every counting subscriber that ends with
its digest and count received exactly the lines the parser checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import resource
import socket
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

from . import client
from .client import CREDENTIALS, EventSink, Exchange, _seq_check

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

try:
    import xxhash
except ImportError:  # pragma: no cover
    xxhash = None


class Crc32:
    """zlib.crc32 with the interface of a hashlib object (no xxhash)."""

    def __init__(self) -> None:
        self.crc = 0

    def update(self, data: Any) -> None:
        self.crc = zlib.crc32(data, self.crc)

    def hexdigest(self) -> str:
        return f"crc32-{self.crc:08x}"


def new_digest() -> Any:
    """The digest every subscriber of a process keeps of its body."""
    if xxhash is not None:
        return xxhash.xxh3_128()
    return Crc32()  # pragma: no cover


# -- the parsing subscriber ------------------------------------------------------


class ParsingSink(EventSink):
    """bench.client's parsing sink that also digests its body as a Counter does."""

    def __init__(self, keep_lines: bool) -> None:
        super().__init__(keep_lines=keep_lines)
        self.digest = new_digest()

    def feed(self, data: bytes) -> None:
        self.digest.update(data)
        super().feed(data)

    @property
    def key(self) -> str:
        return f"{self.digest.hexdigest()}:{self.nbytes}"


class Viewer(Exchange):
    """An Exchange that also says when its response headers arrived."""

    def __init__(self, request: bytes, sink: ParsingSink) -> None:
        super().__init__(request, sink)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> str:
        assert isinstance(self.sink, ParsingSink)
        return self.sink.key

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        super()._fail(exc)


# -- the counting subscribers ------------------------------------------------------

SCRATCH = 256 * 1024  # bytes: the receive buffer all counters of a process share
CARRY_LIMIT = 64 * 1024  # bytes of unparsed framing (headers, a chunk size line) kept
_SHARED = bytearray(SCRATCH)

# Where a Counter is in the response.
HEAD, SIZE, DATA, DATA_END, TRAILER, DONE = range(6)
_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})(?:;[^\r\n]*)?")  # a chunk's size, extensions


class Counter(asyncio.BufferedProtocol):
    """One counting subscriber: sends its request, de-frames the chunked
    response in place and digests its body, keepalive comments skipped.

    get_buffer/buffer_updated come in pairs for one socket at a time (the loop
    reads a socket into the buffer it was given, then says how much), so all
    counters of a process share `scratch`: the few bytes of framing a read
    leaves unparsed (a chunk size line cut in two) are copied back to its
    start before this counter's next read.
    """

    def __init__(self, request: bytes, scratch: bytearray | None = None) -> None:
        self.request = request
        self.buf = _SHARED if scratch is None else scratch
        self.view = memoryview(self.buf)
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.t_end = 0.0
        self.digest = new_digest()
        self.nbytes = 0
        self.reads = 0  # buffer_updated calls
        self.chunks = 0
        self.state = HEAD
        self.left = 0  # bytes of the current chunk not yet seen
        self.fresh = False  # no byte of the current chunk seen yet
        self.skip = False  # the current chunk is a keepalive comment
        self.carry = b""
        self.transport: asyncio.Transport | None = None

    @property
    def key(self) -> str:
        return f"{self.digest.hexdigest()}:{self.nbytes}"

    # asyncio.BufferedProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        carry = self.carry
        if not carry:
            return self.view
        self.buf[: len(carry)] = carry
        return self.view[len(carry) :]

    def buffer_updated(self, nbytes: int) -> None:
        end = len(self.carry) + nbytes
        self.carry = b""
        self.reads += 1
        try:
            self._parse(end)
        except Exception as exc:  # a protocol error: report it
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(ConnectionError("connection closed before the response ended"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection lost before the response ended"))

    def _fail(self, exc: BaseException) -> None:
        for future in (self.ready, self.finished):
            if not future.done():
                future.set_exception(exc)
        self.state = DONE
        if self.transport is not None:
            self.transport.close()

    def _keep(self, pos: int, end: int) -> None:
        """Bytes [pos, end) of the buffer are framing not yet complete."""
        if end - pos > CARRY_LIMIT:
            raise ValueError(f"{end - pos} bytes of framing without an end")
        self.carry = bytes(self.buf[pos:end])

    def _parse(self, end: int) -> None:
        buf, view = self.buf, self.view
        pos = 0
        while pos < end:
            state = self.state
            if state == DATA:
                n = min(self.left, end - pos)
                if self.fresh:
                    self.fresh = False
                    # sse-starlette sends a keepalive comment as a chunk of its own.
                    self.skip = buf[pos] == 0x3A  # b":"
                if not self.skip:
                    self.digest.update(view[pos : pos + n])
                    self.nbytes += n
                pos += n
                self.left -= n
                if not self.left:
                    self.state = DATA_END
            elif state == SIZE:
                eol = buf.find(b"\r\n", pos, end)
                if eol < 0:
                    self._keep(pos, end)
                    return
                size = _SIZE_LINE.fullmatch(buf, pos, eol)  # no copy of the buffer
                if size is None:
                    raise ValueError(f"bad chunk size line {bytes(buf[pos:eol])[:40]!r}")
                pos = eol + 2
                self.chunks += 1
                self.left = int(size[1], 16)
                if self.left:
                    self.fresh = True
                    self.state = DATA
                else:
                    self.state = TRAILER
            elif state == DATA_END:
                if end - pos < 2:
                    self._keep(pos, end)
                    return
                if buf[pos : pos + 2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                pos += 2
                self.state = SIZE
            elif state == TRAILER:
                eol = buf.find(b"\r\n", pos, end)
                if eol < 0:
                    self._keep(pos, end)
                    return
                if eol == pos:
                    self._complete()
                    return
                pos = eol + 2  # a trailer field: not part of the body
            elif state == HEAD:
                eoh = buf.find(b"\r\n\r\n", pos, end)
                if eoh < 0:
                    self._keep(pos, end)
                    return
                self._headers(bytes(buf[pos:eoh]))
                pos = eoh + 4
                self.state = SIZE
            else:  # DONE: nothing is read after the end
                return

    def _headers(self, head: bytes) -> None:
        status_line, *fields = head.split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"bad status line {status_line[:80]!r}")
        self.status = int(rest[:3])
        chunked = False
        for field in fields:
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"transfer-encoding":
                chunked = value.strip().lower() == b"chunked"
        if not self.ready.done():
            self.ready.set_result(None)
        if not chunked:
            raise ValueError(f"status {self.status}: not a chunked response")

    def _complete(self) -> None:
        self.t_end = time.monotonic()
        self.state = DONE
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()


# -- one process's subscribers -------------------------------------------------------


async def _open(viewer: Viewer | Counter, host: str, port: int, rcvbuf: int | None) -> None:
    """Connect `viewer`; with `rcvbuf`, its socket's receive buffer is fixed
    at that size before it connects (no autotuning: see bench/viewers_bench.py)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(lambda: viewer, sock=sock)
    except BaseException:
        sock.close()
        raise


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys_cpu() -> float:
    """The kernel's part (the copies out of the sockets, mostly)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


class Viewers:
    def __init__(self) -> None:
        self.cpu0 = self.sys0 = 0.0
        self.viewers: list[Viewer | Counter] = []
        self.parser: ParsingSink | None = None
        self.seq: int | None = None

    async def connect(
        self,
        base: str,
        path: str,
        count: int,
        parse: bool,
        seq: int | None = None,
        rcvbuf: int | None = None,
    ) -> dict[str, Any]:
        url = urlsplit(base)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        if base in CREDENTIALS:
            lines.append(f"Authorization: Bearer {CREDENTIALS[base]}")
        lines.append("Accept: text/event-stream")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.seq = seq
        self.viewers = []
        self.parser = None
        if parse:
            self.parser = ParsingSink(keep_lines=seq is not None)
            self.viewers.append(Viewer(request, self.parser))
        self.viewers.extend(Counter(request) for _ in range(count - len(self.viewers)))
        self.cpu0, self.sys0 = _cpu(), _sys_cpu()
        t0 = time.monotonic()
        # A few at a time: a burst of 1,000 SYNs can overflow the listen backlog.
        batch = 100
        for i in range(0, len(self.viewers), batch):
            part = self.viewers[i : i + batch]
            await asyncio.gather(*(_open(v, host, port, rcvbuf) for v in part))
        await asyncio.gather(*(v.ready for v in self.viewers))
        statuses = sorted({v.status for v in self.viewers})
        errors = [] if statuses == [200] else [f"statuses {statuses}"]
        return {"connected": len(self.viewers), "elapsed": time.monotonic() - t0, "errors": errors}

    async def wait(self) -> dict[str, Any]:
        results = await asyncio.gather(*(v.finished for v in self.viewers), return_exceptions=True)
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        pairs: dict[str, int] = {}
        for v in self.viewers:
            pairs[v.key] = pairs.get(v.key, 0) + 1
        parser: dict[str, Any] | None = None
        if self.parser is not None:
            parser = {**self.parser.summary(), "key": self.parser.key}
            errors.extend(self.parser.errors)
            if self.parser.done is None:
                errors.append("no done event")
            if self.seq is not None:
                problem = _seq_check(self.parser.lines, self.seq)
                if problem:
                    errors.append(problem)
                self.parser.lines = []
        ends = [v.t_end for v in self.viewers if v.t_end]
        counters = [v for v in self.viewers if isinstance(v, Counter)]
        reads = sum(v.reads for v in counters)
        chunks = sum(v.chunks for v in counters)
        self.viewers = []
        return {
            "ends": ends,
            "cpu": _cpu() - self.cpu0,  # this process's, since `connect`
            "sys_cpu": _sys_cpu() - self.sys0,
            "reads": reads,  # the counters' (socket reads handed to them)
            "chunks": chunks,  # the counters' (HTTP chunks, the last one included)
            "pairs": pairs,
            "parser": parser,
            "errors": errors[:20],
        }


async def answer_with(viewers: Viewers, command: dict[str, Any]) -> dict[str, Any]:
    name = command.pop("cmd")
    token = command.pop("token", None)
    if token and "base" in command:
        CREDENTIALS[command["base"]] = token
    if name == "connect":
        return await viewers.connect(**command)
    if name == "wait":
        return await viewers.wait()
    raise ValueError(f"unknown command {name!r}")


def main() -> None:
    # One socket per subscriber: make sure this process may open them all.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft
    viewers = Viewers()
    client.main(functools.partial(answer_with, viewers))


if __name__ == "__main__":
    main()
