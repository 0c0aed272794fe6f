"""LimitedEventSource writes a stream's chunks straight to uvicorn's transport
(backend/web/connections.py, `_Direct`): the bytes on the wire are exactly
those uvicorn's own `send` would have written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from backend.web.connections import LimitedEventSource, StreamLimits, _Direct

CHUNKS = [b"id: 1\nevent: log\ndata: {}\n\n", b"x" * 70_000, b"", b"id: 2\nevent: done\n\n"]


class Transport(asyncio.Transport):
    """What uvicorn writes, kept."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.writes += 1
        self.out += data

    def writelines(self, lines: Any) -> None:
        self.writes += 1
        for data in lines:
            self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def serve_once(wrap_receive: bool) -> tuple[bytes, bool]:
    """One GET through uvicorn's httptools protocol to an app answering with a
    LimitedEventSource; the bytes written, and whether it wrote directly."""
    used: list[bool] = []

    async def content() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if wrap_receive:  # as a middleware that wraps receive would
            inner = receive

            async def receive_wrapped() -> Any:
                return await inner()

            receive = receive_wrapped
        slot = StreamLimits(10, 10).acquire(SimpleNamespace(name="t"))  # type: ignore[arg-type]
        response = LimitedEventSource(content(), slot, ping=600, sep="\n")
        await response(scope, receive, send)
        used.append(response._direct is not None)

    config = Config(app=app, lifespan="off", log_level="warning", http="httptools")
    config.load()
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    for _ in range(500):
        if used and transport.closed:
            break
        await asyncio.sleep(0.01)
    assert used, "the response did not end"
    return bytes(transport.out), used[0]


def body_of(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    return body


def test_direct_writes_are_byte_identical_to_uvicorns_send() -> None:
    direct, used_direct = asyncio.run(serve_once(wrap_receive=False))
    plain, used_plain = asyncio.run(serve_once(wrap_receive=True))
    assert used_direct and not used_plain
    expected = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS if c) + b"0\r\n\r\n"
    assert body_of(direct) == expected
    assert body_of(plain) == expected


class Cycle:
    """The parts of uvicorn's RequestResponseCycle that _Direct uses."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.flow = FlowControl(self.transport)
        self.disconnected = False


def test_direct_waits_while_paused_then_writes() -> None:
    async def main() -> None:
        cycle = Cycle()
        direct = _Direct(cycle)
        cycle.flow.pause_writing()
        pending = asyncio.ensure_future(direct.write(b"abc", 5))
        await asyncio.sleep(0.02)
        assert not pending.done() and not cycle.transport.out
        cycle.flow.resume_writing()
        await pending
        assert bytes(cycle.transport.out) == b"3\r\nabc\r\n"

    asyncio.run(main())


def test_direct_gives_up_after_the_send_timeout() -> None:
    async def main() -> None:
        cycle = Cycle()
        cycle.flow.pause_writing()  # the client never reads
        with pytest.raises(SendTimeoutError):
            await _Direct(cycle).write(b"abc", 0.05)
        assert not cycle.transport.out

    asyncio.run(main())


def test_direct_writes_nothing_once_the_client_has_gone() -> None:
    async def main() -> None:
        cycle = Cycle()
        cycle.disconnected = True
        await _Direct(cycle).write(b"abc", 5)
        assert not cycle.transport.out

    asyncio.run(main())


def test_only_uvicorns_httptools_receive_is_taken() -> None:
    async def receive() -> Any:
        return {}

    assert _Direct.of(receive) is None
    assert _Direct.of(Cycle().flow.drain) is None  # a bound method of something else
