"""When each line was read: the `at` of `log` events (backend/runs/lines.py,
backend/runs/relay.py) and the text download with timestamps or one stream
(backend/storage/logtext.py, GET /api/runs/{id}/logs)."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.events import EventType, encode_event, rfc3339_at
from backend.runs import relay as relay_module
from backend.runs.lines import LineAssembler
from backend.runs.relay import OutputRelay
from backend.settings import Settings
from backend.storage.eventlog import EventLog
from backend.storage.logtext import NO_TIME, log_text
from backend.storage.reader import read_events

T0 = 1_795_995_601.0  # 2026-11-29T23:40:01Z


def at(offset: float) -> str:
    return rfc3339_at(T0 + offset)


def test_rfc3339_at_writes_milliseconds_in_utc() -> None:
    assert rfc3339_at(T0) == "2026-11-29T23:40:01.000Z"
    assert rfc3339_at(T0 + 0.1234) == "2026-11-29T23:40:01.123Z"


# -- the assembler: a batch's `at` is when its first line was read --------------------------


def test_whole_lines_of_a_chunk_are_read_when_it_was() -> None:
    a = LineAssembler(0.25)
    [batch] = a.feed("stdout", b"one\ntwo\n", 0.0, T0)
    assert (batch.lines, batch.at) == (["one", "two"], T0)


def test_a_line_begun_in_an_earlier_chunk_keeps_that_time() -> None:
    a = LineAssembler(0.25)
    assert a.feed("stdout", b"on", 0.0, T0) == []
    assert a.feed("stdout", b"e", 0.1, T0 + 0.1) == []
    [batch] = a.feed("stdout", b"\ntwo\nth", 0.2, T0 + 0.2)
    assert (batch.lines, batch.at) == (["one", "two"], T0)
    [last] = a.finish()
    assert (last.lines, last.at) == (["th"], T0 + 0.2)


def test_a_partial_line_and_its_continuations() -> None:
    a = LineAssembler(0.25)
    a.feed("stdout", b"Name? ", 0.0, T0)
    [partial] = a.flush_due(0.3)
    assert (partial.lines, partial.partial, partial.at) == (["Name? "], True, T0)
    # its continuation was read later: its event says so (the download joins
    # the parts and gives the line its first part's time)
    [rest] = a.feed("stdout", b"bob\nnext\n", 5.0, T0 + 5)
    assert (rest.first, rest.lines, rest.at) == (1, ["bob", "next"], T0 + 5)


def test_a_continuation_that_goes_alone_then_new_lines() -> None:
    a = LineAssembler(0.25)
    a.feed("stdout", b"Name? ", 0.0, T0)
    a.flush_due(0.3)
    a.feed("stderr", b"warn\n", 1.0, T0 + 1)
    a.feed("stdout", b"bo", 2.0, T0 + 2)
    cont, new = a.feed("stdout", b"b\nok\n", 3.0, T0 + 3)
    assert (cont.first, cont.lines, cont.at) == (1, ["bob"], T0 + 2)
    assert (new.first, new.lines, new.at) == (3, ["ok"], T0 + 3)


def test_without_a_wall_time_the_batch_has_none() -> None:
    [batch] = LineAssembler(0.25).feed("stdout", b"x\n", 0.0)
    assert batch.at is None


# -- the relay: one clock reading per chunk ------------------------------------------------


class Chunks:
    """An attach stream (tty) giving `chunks`, then its end."""

    def __init__(self, chunks: list[bytes | None]) -> None:
        self.chunks = [*chunks, b""]
        self.reads = 0

    def read(self, timeout: float | None) -> bytes | None:
        self.reads += 1
        return self.chunks.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The relay's wall clock: T0, T0 + 1, ... one second a reading; the list
    holds the readings."""
    readings: list[float] = []

    def now() -> float:
        readings.append(T0 + len(readings))
        return readings[-1]

    # the relay's own `time` module only (its monotonic clock is the real one)
    fake = types.SimpleNamespace(monotonic=time.monotonic, time=now)
    monkeypatch.setattr(relay_module, "time", fake)
    yield readings


def relay_events(
    settings: Settings, loop: asyncio.AbstractEventLoop, chunks: list[bytes | None]
) -> tuple[list[dict[str, Any]], Chunks]:
    path = settings.data_dir / "times.events"
    path.parent.mkdir(parents=True, exist_ok=True)
    events = EventLog(path, loop)
    stream = Chunks(chunks)
    OutputRelay(events, settings).run(stream, tty=True)
    events.close()
    return [e.data for e in read_events(path) if e.type == EventType.LOG], stream


def test_each_log_event_has_the_time_its_first_line_was_read(
    settings: Settings, loop: asyncio.AbstractEventLoop, wall: list[float]
) -> None:
    logs, stream = relay_events(settings, loop, [b"one\ntw", b"o\nthree\n", b"tail"])
    assert [(d["first"], d["lines"], d["at"]) for d in logs] == [
        (1, ["one"], at(0)),
        (2, ["two", "three"], at(0)),  # "tw" was read with the first chunk
        (4, ["tail"], at(2)),
    ]
    # the clock is read once per read of the stream, not per line
    assert len(wall) == stream.reads


def test_many_lines_read_the_clock_once_per_chunk(
    settings: Settings, loop: asyncio.AbstractEventLoop, wall: list[float]
) -> None:
    data = b"".join(b"%d\n" % n for n in range(1, 200_001))
    chunks: list[bytes | None] = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    logs, stream = relay_events(settings, loop, chunks)
    assert sum(len(d["lines"]) for d in logs) == 200_000
    assert len(wall) == stream.reads == len(chunks) + 1
    assert {d["at"] for d in logs} <= {at(k) for k in range(len(chunks))}


def test_the_key_order_of_a_log_event(
    settings: Settings, loop: asyncio.AbstractEventLoop, wall: list[float]
) -> None:
    """static/js/logmodel.js reads `{"stream":..,"at":..,"first":..` on a fast path."""
    path = settings.data_dir / "order.events"
    path.parent.mkdir(parents=True, exist_ok=True)
    events = EventLog(path, loop)
    OutputRelay(events, settings).run(Chunks([b"a\n"]), tty=True)
    events.close()
    assert b'data: {"stream":"tty","at":"2026-11-29T23:40:01.000Z","first":1,' in path.read_bytes()


# -- the text download ----------------------------------------------------------------------


def log(stream: str, first: int, lines: list[str], partial: bool = False, **extra: Any) -> bytes:
    return encode_event(
        first,
        "log",
        {"stream": stream, **extra, "first": first, "lines": lines, "partial": partial},
    )


def write(tmp_path: Path, *events: bytes) -> Path:
    path = tmp_path / "run.events"
    path.write_bytes(b"".join(events))
    return path


def text(path: Path, **kwargs: Any) -> str:
    return b"".join(log_text(path, **kwargs)).decode()


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        log("stdout", 1, ["one", "Name? "], True, at=at(0)),
        log("stderr", 3, ["warn"], at=at(1)),
        log("stdout", 2, ["bob"], at=at(5)),
        log("stdout", 4, ["bye", "open"], True, at=at(6)),
    )


def test_timestamps_prefix_each_line_a_partial_line_its_first_parts_time(mixed: Path) -> None:
    assert text(mixed, timestamps=True) == (
        f"{at(0)} one\n{at(1)} warn\n{at(0)} Name? bob\n{at(6)} bye\n{at(6)} open\n"
    )
    assert text(mixed) == "one\nwarn\nName? bob\nbye\nopen\n"


def test_one_stream_with_or_without_timestamps(mixed: Path) -> None:
    assert text(mixed, stream="stderr") == "warn\n"
    assert text(mixed, stream="stderr", timestamps=True) == f"{at(1)} warn\n"
    assert text(mixed, stream="stdout", timestamps=True) == (
        f"{at(0)} one\n{at(0)} Name? bob\n{at(6)} bye\n{at(6)} open\n"
    )


def test_a_log_without_times_uses_the_last_one_seen_or_the_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        log("stdout", 1, ["old"]),
        log("stdout", 2, ["new"], at=at(3)),
        log("stdout", 3, ["old again"]),
    )
    assert text(path, timestamps=True) == f"{NO_TIME} old\n{at(3)} new\n{at(3)} old again\n"
    assert text(path, timestamps=True, default_at=at(-1)).startswith(f"{at(-1)} old\n")


def test_timestamps_across_read_chunks(mixed: Path) -> None:
    whole = text(mixed, timestamps=True)
    for chunk in (1, 7, 50):
        assert b"".join(log_text(mixed, chunk=chunk, timestamps=True)).decode() == whole


def test_the_tests_and_benchmarks_clients_read_events_with_at() -> None:
    """tests/support/sse.py and bench/client.py join lines as before (`at` ignored)."""
    from backend.storage.reader import decode_events
    from bench.client import EventSink
    from tests.support.sse import log_lines

    raw = log("stdout", 1, ["1", "2"], True, at=at(0)) + log("stdout", 2, ["0", "3"], at=at(1))
    sink = EventSink()
    sink.feed(raw)
    assert (sink.lines, sink.errors) == (["1", "20", "3"], [])
    assert log_lines(decode_events(raw)) == ["1", "20", "3"]


def test_a_resumed_relay_gives_at_too(
    settings: Settings, loop: asyncio.AbstractEventLoop, wall: list[float]
) -> None:
    """Re-attach (runs/reattach.py): an open line that cannot go on is ended
    (at: now), then the rest of the engine's log, less what was recorded."""
    from backend.runs.reattach import Recorded, ResumedRelay, SkipRecorded

    recorded = Recorded()
    recorded.add_log({"stream": "tty", "first": 1, "lines": ["one", "tw"], "partial": True})
    path = settings.data_dir / "resumed.events"
    path.parent.mkdir(parents=True, exist_ok=True)
    events = EventLog(path, loop)
    skips = {"tty": SkipRecorded(1, None)}
    relay = ResumedRelay(events, settings, recorded, skips, closed=["tty"])
    relay.run(Chunks([b"one\ntwo\nthree\n"]), tty=True)
    events.close()
    logs = [e.data for e in read_events(path) if e.type == EventType.LOG]
    assert [(d["first"], d["lines"], d["at"]) for d in logs] == [
        (2, [""], at(0)),  # the closing of the open line: when the relay started
        (3, ["two", "three"], at(1)),
    ]
