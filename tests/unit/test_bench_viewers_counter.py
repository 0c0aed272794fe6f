"""Benchmark 14's counting subscriber (bench/viewers_client.py Counter): the
body it digests is exactly the one bench/client.py's Exchange (httptools)
hands its sink, keepalive comments skipped, however the response is chunked
and however the reads cut it; a torn end fails both; a wrong byte changes
its digest."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from backend.events import encode_event
from bench.client import BodySink, Exchange
from bench.viewers_client import Counter, new_digest

AT = "2026-01-01T00:00:00.000Z"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nconnection: close\r\n\r\n"
)
KEEPALIVES = (b": ping\n\n", b": run feed\n\n", b":\n\n")


class Transport:
    """Enough of an asyncio transport for a protocol driven by hand."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Collect:
    """A digest that keeps what it is given (to compare bodies, not digests)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: Any) -> None:
        self.parts.append(bytes(data))

    def hexdigest(self) -> str:
        return "collected"


def events(rng: random.Random) -> list[bytes]:
    out = [encode_event(1, "status", {"status": "running"})]
    n = 1
    for i in range(2, rng.randrange(3, 40)):
        count = rng.choice((1, 3, 50, 400))
        lines = [str(k) for k in range(n, n + count)]
        out.append(
            encode_event(i, "log", {"stream": "stdout", "at": AT, "first": n, "lines": lines})
        )
        n += count
    out.append(encode_event(len(out) + 1, "done", {"status": "succeeded", "log_lines": n - 1}))
    return out


def wire(rng: random.Random) -> tuple[bytes, bytes]:
    """A chunked response (random chunk sizes, extensions, keepalive chunks
    anywhere, maybe trailers) and the body the subscriber keeps."""
    body = b"".join(events(rng))
    chunks: list[bytes] = []
    pos = 0
    while pos < len(body):
        if rng.random() < 0.2:
            chunks.append(rng.choice(KEEPALIVES))
        size = rng.choice((1, 2, 17, 300, 4096, 70000))
        while body[pos + size : pos + size + 1] == b":":  # only comments start so
            size += 1
        chunks.append(body[pos : pos + size])
        pos += size
    if rng.random() < 0.5:
        chunks.append(rng.choice(KEEPALIVES))
    framed = []
    for chunk in chunks:
        ext = b";x=1" if rng.random() < 0.1 else b""
        framed.append(b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk))
    trailer = b"x-trailer: 1\r\n" if rng.random() < 0.3 else b""
    return HEAD + b"".join(framed) + b"0\r\n" + trailer + b"\r\n", body


def cuts(raw: bytes, rng: random.Random) -> list[bytes]:
    """`raw` as the reads of a socket: random sizes, from 1 byte up."""
    out, pos = [], 0
    while pos < len(raw):
        size = rng.choice((1, 2, 3, 5, 64, 1000, 16384, 300000))
        out.append(raw[pos : pos + size])
        pos += size
    return out


async def old(reads: list[bytes], eof: bool) -> tuple[bytes, bool]:
    """What bench.client.Exchange hands its sink, and whether it ended well."""
    sink = BodySink()
    exchange = Exchange(b"GET / HTTP/1.1\r\n\r\n", sink)
    exchange.connection_made(Transport())  # type: ignore[arg-type]
    for data in reads:
        exchange.data_received(data)
    if eof:
        exchange.eof_received()
    ok = exchange.finished.done() and exchange.finished.exception() is None
    if exchange.finished.done():
        exchange.finished.exception()  # retrieved
    return sink.body, ok


async def new(
    reads: list[bytes], eof: bool, scratch: int, digest: Any = None
) -> tuple[Counter, bool]:
    """Counter fed the same reads the way the loop feeds it: each read into
    the buffer it gave (at most that much at once)."""
    counter = Counter(b"GET / HTTP/1.1\r\n\r\n", bytearray(scratch))
    if digest is not None:
        counter.digest = digest
    counter.connection_made(Transport())  # type: ignore[arg-type]
    for data in reads:
        while data and not counter.finished.done():
            buf = counter.get_buffer(-1)
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            counter.buffer_updated(n)
            data = data[n:]
    if eof:
        counter.eof_received()
    ok = counter.finished.done() and counter.finished.exception() is None
    for future in (counter.ready, counter.finished):
        if future.done():
            future.exception()  # retrieved
    return counter, ok


@pytest.mark.parametrize("seed", range(60))
def test_the_same_body_as_the_httptools_client(seed: int) -> None:
    rng = random.Random(seed)
    raw, body = wire(rng)
    reads = cuts(raw, rng)
    scratch = rng.choice((200, 1000, 256 * 1024))

    async def check() -> None:
        expected, ok = await old(reads, eof=True)
        assert ok and expected == body
        collect = Collect()
        counter, ok = await new(reads, eof=True, scratch=scratch, digest=collect)
        assert ok and counter.status == 200
        assert b"".join(collect.parts) == expected
        assert counter.nbytes == len(expected)
        assert counter.t_end > 0

    asyncio.run(check())


@pytest.mark.parametrize("seed", range(30))
def test_a_torn_end_fails_both(seed: int) -> None:
    rng = random.Random(1000 + seed)
    raw, _ = wire(rng)
    torn = raw[: rng.randrange(len(HEAD) + 1, len(raw) - 1)]
    reads = cuts(torn, rng)

    async def check() -> None:
        expected, ok_old = await old(reads, eof=True)
        collect = Collect()
        counter, ok_new = await new(reads, eof=True, scratch=4096, digest=collect)
        assert not ok_old and not ok_new and not counter.t_end
        assert b"".join(collect.parts) == expected  # the same bytes so far

    asyncio.run(check())


@pytest.mark.parametrize("seed", range(30))
def test_a_wrong_byte_changes_the_digest(seed: int) -> None:
    rng = random.Random(2000 + seed)
    raw, body = wire(rng)
    reads = cuts(raw, rng)
    # A byte of the body (never of a keepalive comment): where it is in `raw`.
    at = rng.randrange(len(body))
    offset, seen = len(HEAD), 0
    where = -1
    while where < 0:  # walk the chunks to the body's `at`th byte
        eol = raw.index(b"\r\n", offset)
        size = int(raw[offset:eol].split(b";")[0], 16)
        data = eol + 2
        if raw[data : data + 1] != b":" and seen + size > at:
            where = data + at - seen
        elif raw[data : data + 1] != b":":
            seen += size
        offset = data + size + 2
    wrong = bytearray(raw)
    wrong[where] ^= 1 << rng.randrange(8)

    async def check() -> None:
        right, ok = await new(reads, eof=True, scratch=4096)
        assert ok
        digest = new_digest()
        digest.update(body)
        assert right.key == f"{digest.hexdigest()}:{len(body)}"
        bad, ok = await new(cuts(bytes(wrong), rng), eof=True, scratch=4096)
        assert ok and bad.key != right.key and bad.nbytes == right.nbytes

    asyncio.run(check())


def test_a_wrong_chunk_size_fails() -> None:
    raw = HEAD + b"5\r\nhello\r\nz\r\nab\r\n0\r\n\r\n"

    async def check() -> None:
        counter, ok = await new([raw], eof=True, scratch=4096)
        assert not ok
        assert isinstance(counter.finished.exception(), ValueError)

    asyncio.run(check())


def test_a_response_not_chunked_fails() -> None:
    raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n{}"

    async def check() -> None:
        counter, ok = await new([raw], eof=True, scratch=4096)
        assert not ok and counter.status == 429
        assert counter.ready.exception() is None  # the status is known

    asyncio.run(check())
