"""The client process of benchmarks 16 and 18: heavy runs at once, and a late
subscriber to a live run.

`python -m bench.live_client`, driven over a pipe as `bench.client` is (one
JSON command per line on stdin, one JSON answer per line on stdout; the
commands of `bench.client` work here too). Every time is `time.monotonic()`,
taken in this process.

Commands:

- `heavy`: POST `count` runs of `seq 1 N` at once, each followed by a
  parsing subscriber (`SeqSink`: every event id, every line and its number
  checked as it arrives); elapsed from just before the POSTs to the end of
  the last response.
- `late`: POST one `seq 1 N` run followed by an early parsing subscriber;
  when that subscriber has `half` bytes, measure (in `order`) a late counting
  subscriber (`GET` of the run's events from the start: its time to catch
  up, then its lag behind the early one to the end) and `cat` of the live
  event file into a pipe (time to read the same number of bytes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from backend.storage.reader import Joined

from . import client
from .client import CREDENTIALS, ByteSink, EventSink, dispatch, http, post_run

try:  # the same loop the server runs on; plain asyncio otherwise
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


# -- a subscriber of a `seq 1 N` run that checks every line as it arrives -------------


def seq_offset(n: int) -> int:
    """Where line n (1-based) of `seq 1 N` output starts: the bytes of lines 1..n-1."""
    total, digits, low = 0, 1, 1
    while low < n:
        high = min(n - 1, low * 10 - 1)
        total += (high - low + 1) * (digits + 1)
        digits, low = digits + 1, low * 10
    return total


_SEQ_TEXT: dict[int, str] = {}
_SEQ_JSON: dict[int, bytes] = {}


def seq_text(count: int) -> str:
    """`seq 1 count` output as one string (built once per count, shared)."""
    if count not in _SEQ_TEXT:
        _SEQ_TEXT[count] = "\n".join(map(str, range(1, count + 1))) + "\n"
    return _SEQ_TEXT[count]


def seq_json(count: int) -> bytes:
    """Lines 1..count as the items of a JSON array of strings, as the server's
    encoder (orjson) writes them: `"1","2",...` (built once per count)."""
    if count not in _SEQ_JSON:
        _SEQ_JSON[count] = ('"' + '","'.join(map(str, range(1, count + 1))) + '"').encode()
    return _SEQ_JSON[count]


def json_offset(n: int) -> int:
    """Where line n's item starts in seq_json: 3 bytes more per line than seq_offset."""
    return seq_offset(n) + 2 * (n - 1)


def json_line(offset: int) -> int | None:
    """The n whose item starts at `offset` in seq_json (None: no item starts there)."""
    base, digits, low = 0, 1, 1
    while True:
        width = digits + 3  # the quotes and the comma
        span = 9 * low * width
        if offset < base + span:
            q, r = divmod(offset - base, width)
            return low + q if r == 0 else None
        base, digits, low = base + span, digits + 1, low * 10


_LINES = b',"lines":['
_LINES_END = b'],"partial":false'


class SeqSink(EventSink):
    """EventSink of a `seq 1 count` run: each line is compared with its number
    as it arrives, instead of being kept for a comparison at the end.

    Fast path: events are cut where they end (each is three lines and a blank
    one: three memchr, as the server's own index does); a `log` event of
    whole lines whose `lines` array is, byte for byte, the canonical JSON of
    the expected lines (`seq_json`: digits need no escaping, so that is the
    one encoding orjson writes) is checked without decoding its lines: its id
    must be the next, the rest of its JSON (lines left out) must decode to
    `first` = the next line number and `partial` false, and the array's bytes
    must equal the expected lines' from there, ending at an item's end. Equal
    bytes decode to equal lines, so this is the same check as decoding each
    line and comparing it, at the cost of a memcmp.

    Anything else takes EventSink's general path: an event of another kind or
    shape (a line sent in parts, a mismatch) is decoded and joined, its lines
    compared as `"\\n".join(texts)` against the slice of `seq` output (the
    slice has exactly len(texts) - 1 line ends, so a text holding a newline,
    or one line too many or too few, cannot match); a stream not cut as three
    lines and a blank one goes to EventSink's splitter from there on. Every
    line 1..count must be checked exactly once (`checked`).
    """

    def __init__(self, count: int, on_event: Callable[[str, Any], None] | None = None) -> None:
        super().__init__(keep_lines=False, on_event=on_event)
        self.count = count
        self.checked = 0
        self.fast = 0  # events checked on the fast path
        self._text = seq_text(count)
        self._json = seq_json(count)
        self._rest = b""
        self._general = False  # the stream left the three-line shape

    def feed(self, data: bytes) -> None:
        ByteSink.feed(self, data)
        if self._general:
            for block in self._splitter.feed(data):
                self._event(block)
            return
        buf = self._rest + data if self._rest else data
        size = len(buf)
        find = buf.find
        pos = 0
        while True:
            a = find(b"\n", pos)
            b = find(b"\n", a + 1) if a >= 0 else -1
            c = find(b"\n", b + 1) if b >= 0 else -1
            if c < 0 or c + 1 >= size:
                break
            if buf[c + 1] != 0x0A or buf[pos : pos + 4] != b"id: ":
                self._general = True
                self._rest = b""
                for block in self._splitter.feed(buf[pos:]):
                    self._event(block)
                return
            if not self._fast_log(buf, pos, a, b, c):
                self._event(buf[pos:c])
            pos = c + 2
        self._rest = buf[pos:]

    def _fast_log(self, buf: bytes, pos: int, a: int, b: int, c: int) -> bool:
        """Check the event of lines buf[pos:a], buf[a+1:b], buf[b+1:c] on the
        fast path; False when it must take the general one."""
        if self.done is not None or self._joiner.open_count:
            return False
        if buf[a + 1 : b] != b"event: log" or buf[b + 1 : b + 7] != b"data: ":
            return False
        start = buf.find(_LINES, b + 7, c)
        end = buf.rfind(_LINES_END, b + 7, c)
        if start < 0 or end <= start + len(_LINES):
            return False
        try:
            event_id = int(buf[pos + 4 : a])
            rest = orjson.loads(buf[b + 7 : start] + b',"lines":[]' + buf[end + 1 : c])
        except ValueError:
            return False
        first = rest.get("first") if isinstance(rest, dict) else None
        if (
            event_id != self.next_id
            or type(first) is not int
            or first != self._joiner.total + 1
            or rest.get("partial") is not False
        ):
            return False
        at = json_offset(first)
        after = at + end - start - len(_LINES)
        following = json_line(after + 1)  # the line after the last one here
        if following is None or buf[start + len(_LINES) : end] != self._json[at:after]:
            return False
        lines = following - first
        self.next_id += 1
        self.types["log"] = self.types.get("log", 0) + 1
        self._joiner.total += lines
        self.checked += lines
        self.fast += 1
        if self.on_event is not None:
            self.on_event("log", None)
        return True

    def close(self) -> None:
        if self._rest.strip(b"\n"):
            self._error(f"unterminated event at the end: {self._rest[:120]!r}")
        super().close()

    def _keep(self, joined: Joined) -> None:
        continued = joined.continued
        if continued is not None and not continued.partial:
            self._check(continued.n, [continued.text])
        if joined.texts:
            self._check(joined.first, joined.texts)

    def _check(self, first: int, texts: list[str]) -> None:
        last = first + len(texts) - 1
        if first < 1 or last > self.count:
            self._error(f"lines {first}-{last} of a {self.count}-line run")
            return
        expected = self._text[seq_offset(first) : seq_offset(last + 1) - 1]
        if "\n".join(texts) != expected:
            got = next(
                (i for i, t in enumerate(texts, first) if t != str(i)), f"{len(texts)} lines"
            )
            self._error(f"lines {first}-{last} differ from seq output (at {got})")
            return
        self.checked += len(texts)

    def problem(self) -> str | None:
        """None when lines 1..count all arrived and matched."""
        if self.checked != self.count or self._joiner.total != self.count:
            return f"{self.checked} lines checked of {self._joiner.total}, expected {self.count}"
        return None


class Marks:
    """(bytes so far, time) at each piece a subscriber receives."""

    def __init__(self) -> None:
        self.nbytes: list[int] = []
        self.times: list[float] = []

    def add(self, nbytes: int) -> None:
        self.nbytes.append(nbytes)
        self.times.append(time.monotonic())

    def time_of(self, nbytes: int) -> float | None:
        """When byte `nbytes` (1-based count) had arrived."""
        i = bisect_left(self.nbytes, nbytes)
        return self.times[i] if i < len(self.times) else None


class EarlySink(SeqSink):
    """The early subscriber: parses and checks, marks arrivals, and wakes the
    measurement when it has `half` bytes."""

    def __init__(self, count: int, half: int, reached: asyncio.Future[float]) -> None:
        super().__init__(count)
        self.marks = Marks()
        self.half = half
        self.reached = reached

    def feed(self, data: bytes) -> None:
        super().feed(data)
        self.marks.add(self.nbytes)
        if self.nbytes >= self.half and not self.reached.done():
            self.reached.set_result(time.monotonic())


class LateSink(ByteSink):
    """A counting subscriber (CRC-32 and bytes, as benchmark 5's replay):
    notes when it has `target` bytes (caught up), and the CRC of those; with
    a `leader` (the early subscriber), when it first had as many bytes as
    the leader had then (level)."""

    def __init__(
        self, target: int, caught: asyncio.Future[float], leader: ByteSink | None = None
    ) -> None:
        super().__init__()
        self.target = target
        self.caught = caught
        self.leader = leader
        self.level: float | None = None
        self.prefix_crc: int | None = None
        self.marks = Marks()

    def feed(self, data: bytes) -> None:
        if self.prefix_crc is None and self.nbytes + len(data) >= self.target:
            self.prefix_crc = zlib.crc32(data[: self.target - self.nbytes], self.crc)
        super().feed(data)
        self.marks.add(self.nbytes)
        if self.nbytes >= self.target and not self.caught.done():
            self.caught.set_result(time.monotonic())
        if self.level is None and self.leader is not None and self.nbytes >= self.leader.nbytes:
            self.level = time.monotonic()


class CatReader(asyncio.SubprocessProtocol):
    """`cat FILE` into a pipe, read on this loop with the same CRC work per
    byte: notes when it has `target` bytes."""

    def __init__(self, target: int) -> None:
        loop = asyncio.get_running_loop()
        self.sink = LateSink(target, loop.create_future())
        self.exited: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.sink.feed(data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


# -- commands --------------------------------------------------------------------------


async def cmd_heavy(base: str, body: dict[str, Any], count: int, seq: int) -> dict[str, Any]:
    """`count` runs of `seq 1 N` at once, each with a parsing subscriber."""

    first_lines: list[float] = []  # when each run's first `log` event arrived

    async def one() -> tuple[SeqSink, float]:
        record = await post_run(base, body)

        def on_event(kind: str, data: Any) -> None:
            if kind == "log" and sink.types["log"] == 1:
                first_lines.append(time.monotonic() - t0)

        sink = SeqSink(seq, on_event)
        exchange = await http(base, "GET", record["links"]["events"], sink=sink)
        if exchange.status != 200:
            sink.errors.append(f"status {exchange.status}")
        return sink, exchange.t_end

    seq_text(seq), seq_json(seq)  # built before the clock starts
    t0, c0 = time.monotonic(), time.process_time()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors: list[str] = []
    ends: list[float] = []
    events: list[int] = []
    for result in results:
        if isinstance(result, BaseException):
            errors.append(f"{type(result).__name__}: {result}")
            continue
        sink, t_end = result
        ends.append(t_end)
        events.append(sink.next_id - 1)
        errors.extend(sink.errors + sink.summary()["errors"])
        done = sink.done or {}
        if (done.get("status"), done.get("log_lines"), done.get("dropped_lines")) != (
            "succeeded",
            seq,
            0,
        ):
            errors.append(f"run ended {done}")
        problem = sink.problem()
        if problem:
            errors.append(problem)
    return {
        "elapsed": (max(ends) - t0) if ends else None,
        "ends": [t - t0 for t in ends],
        "client_cpu": time.process_time() - c0,
        "events": events,
        "first_lines": sorted(first_lines),
        "errors": errors[:20],
    }


async def _late_subscriber(
    base: str, path: str, events_file: Path, leader: ByteSink
) -> tuple[LateSink, asyncio.Task[Any], float, int]:
    """Connect a late subscriber; (sink, its exchange task, t0, bytes in the file at t0)."""
    loop = asyncio.get_running_loop()
    size = os.stat(events_file).st_size
    sink = LateSink(size, loop.create_future(), leader)
    t0 = time.monotonic()
    task = asyncio.ensure_future(http(base, "GET", path, sink=sink))
    return sink, task, t0, size


async def _cat(events_file: Path) -> tuple[LateSink, float, int]:
    loop = asyncio.get_running_loop()
    size = os.stat(events_file).st_size
    t0 = time.monotonic()
    _, reader = await loop.subprocess_exec(
        lambda: CatReader(size),
        "cat",
        str(events_file),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await reader.sink.caught
    await reader.exited
    return reader.sink, t0, size


def _prefix_crc(path: Path, size: int) -> int:
    with path.open("rb") as f:
        return zlib.crc32(f.read(size))


async def cmd_late(
    base: str, body: dict[str, Any], events_dir: str, seq: int, half: int, order: str
) -> dict[str, Any]:
    """One `seq` run, an early parsing subscriber, and at `half` bytes a late
    subscriber and a `cat` of the live file, in `order` ("late,cat" or "cat,late")."""
    loop = asyncio.get_running_loop()
    seq_text(seq), seq_json(seq)
    t_post = time.monotonic()
    record = await post_run(base, body)
    path = record["links"]["events"]
    events_file = Path(events_dir) / f"{record['id']}.events"
    reached: asyncio.Future[float] = loop.create_future()
    early = EarlySink(seq, half, reached)
    early_task = asyncio.ensure_future(http(base, "GET", path, sink=early))
    t_half = await asyncio.wait_for(asyncio.shield(reached), 120)
    errors: list[str] = []
    result: dict[str, Any] = {"run_id": record["id"], "half_at": t_half - t_post}
    late: LateSink | None = None
    late_task: asyncio.Task[Any] | None = None
    for what in order.split(","):
        if what == "late":
            late, late_task, t0, size = await _late_subscriber(base, path, events_file, early)
            t_caught = await asyncio.wait_for(asyncio.shield(late.caught), 120)
            result["late"] = {"elapsed": t_caught - t0, "bytes": size, "early_bytes": early.nbytes}
            result["late_t0"] = t0
        else:
            cat, t0, size = await _cat(events_file)
            result["cat"] = {"elapsed": await cat.caught - t0, "bytes": size}
            if cat.prefix_crc != _prefix_crc(events_file, size):
                errors.append("cat read other bytes than the file's")
    exchange = await early_task
    assert late_task is not None and late is not None
    late_exchange = await late_task
    for name, ex in (("early", exchange), ("late", late_exchange)):
        if ex.status != 200:
            errors.append(f"{name} subscriber: status {ex.status}")
    errors.extend(early.errors + early.summary()["errors"])
    done = early.done or {}
    if (done.get("status"), done.get("log_lines"), done.get("dropped_lines")) != (
        "succeeded",
        seq,
        0,
    ):
        errors.append(f"run ended {done}")
    problem = early.problem()
    if problem:
        errors.append(problem)
    file_size = events_file.stat().st_size
    if (late.crc, late.nbytes) != (early.crc, early.nbytes) or early.nbytes != file_size:
        errors.append(
            f"late subscriber got {late.nbytes} bytes, early {early.nbytes}, file {file_size}"
        )
    if late.prefix_crc != _prefix_crc(events_file, late.target):
        errors.append("late subscriber's first bytes differ from the file's")
    # Its lag behind the early subscriber: at each piece it got after it was
    # level with it (had as many bytes as the early one had then), and at the end.
    level = late.level if late.level is not None else late_exchange.t_end
    lags = []
    for nbytes, t in zip(late.marks.nbytes, late.marks.times, strict=True):
        t_early = early.marks.time_of(nbytes)
        if t > level and t_early is not None:
            lags.append(t - t_early)
    result.update(
        end_lag=late_exchange.t_end - exchange.t_end,
        level=level - result["late_t0"],
        headers=late_exchange.t_headers - result["late_t0"],
        first_piece=late.marks.times[0] - result["late_t0"] if late.marks.times else None,
        pieces_to_catch_up=bisect_left(late.marks.nbytes, late.target) + 1,
        max_lag=max(lags, default=0.0),
        lags=len(lags),
        file_bytes=file_size,
        elapsed=exchange.t_end - t_post,
        errors=errors[:20],
    )
    return result


COMMANDS = {"heavy": cmd_heavy, "late": cmd_late}


async def answer(command: dict[str, Any]) -> dict[str, Any]:
    """This module's commands, else bench.client's."""
    if command["cmd"] not in COMMANDS:
        return await dispatch(command)
    name = command.pop("cmd")
    token = command.pop("token", None)
    if token and "base" in command:
        CREDENTIALS[command["base"]] = token
    result: dict[str, Any] = await COMMANDS[name](**command)
    return result


def main() -> None:
    client.main(answer)


if __name__ == "__main__":
    main()
