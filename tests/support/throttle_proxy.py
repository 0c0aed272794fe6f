"""A loopback TCP proxy that throttles, and can stall, the target->client direction.

Put it in front of a test registry so that `docker pull 127.0.0.1:PORT/...` shows
real Downloading progress (Docker treats every 127.0.0.0/8 registry as insecure,
so plain HTTP through the proxy works), or stops getting bytes in the middle of a
layer (stall mode) while the connections stay open.

From pytest (the proxy runs in its own thread with its own event loop):

    from tests.support.throttle_proxy import ThrottleProxy

    with ThrottleProxy("127.0.0.1:5000", rate=1024 * 1024) as proxy:
        image = f"{proxy.address}/pullrun/layers:latest"   # "127.0.0.1:PORT/..."
        ...

    with ThrottleProxy("127.0.0.1:5000", rate=1 << 20, stall_after=2 << 20) as proxy:
        ...                              # pull; after 2 MiB downstream nothing more comes
        assert proxy.stalled.wait(30)    # threading.Event, set when the stall begins
        proxy.release()                  # optional: forward again, stall disarmed

From a shell:

    python tests/support/throttle_proxy.py --listen 127.0.0.1:5100 \\
        --target 127.0.0.1:5000 --rate 1MiB [--stall-after 2MiB]

Only loopback addresses are accepted, for both the listening and the target side.
Only the standard library is used, so the file also runs on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import re
import signal
import sys
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["ThrottleProxy", "parse_size"]

_MAX_CHUNK = 64 * 1024


def parse_size(text: str) -> int:
    """'1048576', '512k', '1.5MiB', '2M' -> bytes (k/M/G are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * factor)


def _split_hostport(value: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(value, tuple):
        host, port = value
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        port = int(port_text)
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback address; this proxy stays on 127.0.0.0/8")
    return host, port


class _Conn:
    """One proxied connection: the client side and the target side."""

    def __init__(self, client_writer: asyncio.StreamWriter) -> None:
        self.client_writer = client_writer
        self.target_writer: asyncio.StreamWriter | None = None
        self.client_eof = asyncio.Event()

    def abort(self) -> None:
        for w in (self.client_writer, self.target_writer):
            if w is not None:
                w.transport.abort()


class ThrottleProxy:
    """TCP proxy from 127.0.0.1:`port` to `target`, limiting target->client bytes.

    target:      "127.0.0.1:5000" or ("127.0.0.1", 5000); must be loopback.
    rate:        downstream bytes per second, shared by all connections (None: no limit).
    stall_after: after this many downstream bytes (counted over all connections),
                 forward nothing more downstream, on open or new connections, until
                 release() or stop(); connections stay open. None: never stall.
    listen, port: where to listen; port 0 picks a free port (see .port).

    Attributes: host, port, address ("127.0.0.1:PORT", usable as a registry host),
    target, bytes_down, bytes_up, connections (accepted so far), stalled
    (threading.Event). Methods: start(), stop() (also a context manager),
    set_rate(), stall(), release(), drop_connections(). Inside a running event
    loop use `await start_async()` / `await stop_async()` instead of start/stop.
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        *,
        rate: float | None = None,
        stall_after: int | None = None,
        listen: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target = _split_hostport(target)
        self.host, _ = _split_hostport((listen, 0))
        self.port = port
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self._rate = float(rate) if rate else None
        self._stall_after = stall_after
        self.bytes_down = 0
        self.bytes_up = 0
        self.connections = 0
        self.stalled = threading.Event()
        self._reserved_down = 0  # bytes granted to be sent downstream (>= bytes_down)
        self._clock = 0.0  # pacing: loop time at which the next chunk may go out
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ---- public API ----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rate(self) -> float | None:
        return self._rate

    def __repr__(self) -> str:
        t = f"{self.target[0]}:{self.target[1]}"
        return f"<ThrottleProxy {self.address} -> {t} rate={self._rate} down={self.bytes_down}>"

    def start(self) -> ThrottleProxy:
        """Start listening in a background thread; returns once .port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._thread_main, name=repr(self), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start within 10 s")
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> ThrottleProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_rate(self, rate: float | None) -> None:
        """Change the downstream limit (bytes/s; None: unlimited) from any thread."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self._call(lambda: setattr(self, "_rate", float(rate) if rate else None))

    def stall(self) -> None:
        """Stall now: forward nothing more downstream until release()."""
        self._call(lambda: self._set_stall_after(self._reserved_down))

    def release(self) -> None:
        """End a stall (or disarm stall_after): forward downstream again."""
        self._call(lambda: self._set_stall_after(None))

    def drop_connections(self) -> None:
        """Abort every open connection (both sides get a reset); keep listening."""

        def drop() -> None:
            for conn in list(self._conns.values()):
                conn.abort()

        self._call(drop)

    async def start_async(self) -> None:
        """Start serving in the running event loop (for async callers)."""
        self._loop = asyncio.get_running_loop()
        self._flowing = asyncio.Event()
        self._set_stall_after(self._stall_after)
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_async(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for conn in list(self._conns.values()):
            conn.abort()  # the pumps see the resets and end by themselves
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ---- internals ---------------------------------------------------------------------

    def _call(self, fn: Callable[[], object]) -> None:
        """Run fn on the proxy's loop (now, if called from it or before start)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            fn()
        elif self._thread is not None and threading.current_thread() is not self._thread:
            loop.call_soon_threadsafe(fn)
        else:
            fn()

    def _set_stall_after(self, limit: int | None) -> None:
        self._stall_after = limit
        if self._flowing is None:
            return
        if limit is None or self._reserved_down < limit:
            self._flowing.set()
            self.stalled.clear()
        else:
            self._enter_stall()

    def _enter_stall(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()
        self.stalled.set()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.start_async())
        except BaseException as e:
            self._startup_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _chunk_size(self) -> int:
        if self._rate is None:
            return _MAX_CHUNK
        # about 20 chunks a second keeps the rate smooth at any setting
        return max(512, min(_MAX_CHUNK, int(self._rate / 20)))

    async def _pace(self, n: int) -> None:
        rate = self._rate
        if rate is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._clock)
        self._clock = start + n / rate
        if start > now:
            await asyncio.sleep(start - now)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(writer)
        self._conns[task] = conn
        self.connections += 1
        try:
            try:
                t_reader, t_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            conn.target_writer = t_writer
            up = asyncio.create_task(self._pump_up(reader, t_writer, conn))
            down = asyncio.create_task(self._pump_down(t_reader, writer, conn))
            try:
                await asyncio.gather(up, down)
            finally:
                up.cancel()
                down.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop_async() cancels handlers. Ending normally keeps Python 3.11's
            # StreamReaderProtocol from logging the cancelled task as an error.
            pass
        finally:
            for w in (writer, conn.target_writer):
                if w is not None:
                    w.close()
            self._conns.pop(task, None)

    async def _pump_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        """client -> target, unthrottled."""
        try:
            while data := await reader.read(_MAX_CHUNK):
                writer.write(data)
                await writer.drain()
                self.bytes_up += len(data)
        except OSError:
            pass
        finally:
            conn.client_eof.set()
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()

    async def _wait_flowing(self, conn: _Conn) -> bool:
        """Wait out a stall; False if the client went away meanwhile."""
        flowing = self._flowing
        assert flowing is not None
        while not flowing.is_set():
            if conn.client_eof.is_set():
                return False
            eof = asyncio.create_task(conn.client_eof.wait())
            go = asyncio.create_task(flowing.wait())
            try:
                await asyncio.wait({eof, go}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                eof.cancel()
                go.cancel()
        return True

    async def _pump_down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        """target -> client, paced to the rate, held back while stalled."""
        try:
            while data := await reader.read(self._chunk_size()):
                while data:
                    if not await self._wait_flowing(conn):
                        conn.abort()
                        return
                    n = len(data)
                    limit = self._stall_after
                    if limit is not None:
                        room = limit - self._reserved_down
                        if room <= 0:
                            self._enter_stall()
                            continue
                        n = min(n, room)
                    piece, data = data[:n], data[n:]
                    self._reserved_down += n
                    await self._pace(n)
                    writer.write(piece)
                    await writer.drain()
                    self.bytes_down += n
                    if limit is not None and self._reserved_down >= limit:
                        self._enter_stall()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Loopback TCP proxy limiting (and optionally stalling) target->client bytes."
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument(
        "--rate", type=parse_size, default=None, help="downstream bytes/s, e.g. 1048576 or 1MiB"
    )
    parser.add_argument(
        "--stall-after",
        type=parse_size,
        default=None,
        help="stop forwarding downstream after this many bytes (connections stay open)",
    )
    args = parser.parse_args(argv)
    host, port = _split_hostport(args.listen)
    proxy = ThrottleProxy(
        args.target, rate=args.rate, stall_after=args.stall_after, listen=host, port=port
    )

    async def run() -> None:
        await proxy.start_async()
        print(
            f"throttle_proxy: listening on {proxy.address} -> {args.target}"
            f" rate={args.rate or 'unlimited'} stall_after={args.stall_after}",
            flush=True,
        )
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await proxy.stop_async()
        print(
            f"throttle_proxy: stopped; {proxy.connections} connections,"
            f" {proxy.bytes_down} bytes down, {proxy.bytes_up} bytes up",
            flush=True,
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
