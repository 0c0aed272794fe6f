"""Benchmark 14's floor: a trivial server writing the same bytes to every subscriber.

`python -m bench.viewers_floor PORT COUNT FILE`: a uvloop server on
127.0.0.1:PORT answers every GET with the bytes of FILE (a finished run's
event file) as one chunked HTTP/1.1 response, in CHUNK-sized chunks framed
once and shared by all connections, under the transport's flow control. It
holds every response until COUNT connections have asked, then prints
`time.monotonic()` and writes to all of them. No Python work per subscriber
beyond a write per chunk: what is left is the kernel's copy of the bytes into
each socket and the client's work, the least any server could spend here.
"""

from __future__ import annotations

import asyncio
import sys
import time

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

CHUNK = 256 * 1024
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)


class Floor:
    def __init__(self, count: int, data: bytes) -> None:
        self.count = count
        self.chunks = [
            b"%x\r\n%s\r\n" % (len(data[i : i + CHUNK]), data[i : i + CHUNK])
            for i in range(0, len(data), CHUNK)
        ] + [b"0\r\n\r\n"]
        self.waiting: list[Subscriber] = []
        self.started = False

    def arrived(self, subscriber: Subscriber) -> None:
        self.waiting.append(subscriber)
        if len(self.waiting) == self.count:
            self.started = True
            print(time.monotonic(), flush=True)
            for s in self.waiting:
                s.pump()


class Subscriber(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.request = b""
        self.next = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.request is None:
            return
        self.request += data
        if b"\r\n\r\n" in self.request:
            self.request = None  # type: ignore[assignment]
            assert self.transport is not None
            self.transport.write(HEAD)
            self.floor.arrived(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.floor.started:
            self.pump()

    def pump(self) -> None:
        assert self.transport is not None
        chunks = self.floor.chunks
        while not self.paused and self.next < len(chunks):
            self.transport.write(chunks[self.next])
            self.next += 1
        if self.next == len(chunks) and not self.transport.is_closing():
            self.transport.close()


async def serve(port: int, count: int, path: str) -> None:
    with open(path, "rb") as f:
        floor = Floor(count, f.read())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Subscriber(floor), "127.0.0.1", port, backlog=count + 128
    )
    print("ready", flush=True)
    async with server:
        # Until the driver closes our stdin.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.read()


def main() -> None:
    port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if uvloop is not None:
        uvloop.run(serve(port, count, path))
    else:  # pragma: no cover
        asyncio.run(serve(port, count, path))


if __name__ == "__main__":
    main()
