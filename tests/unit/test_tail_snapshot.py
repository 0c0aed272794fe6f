"""The run page's tail snapshot and GET /api/runs/{id}/lines, read through the
event index, against the full replay (web/snapshot.py `build_snapshot`, kept
as the reference): the same snapshot for every run, at every event of it
(a live run), and every line exactly once when paging back to line 1.

Logs are made as the server makes them: the real LineAssembler (partial
lines on two streams, a continuation after other streams' lines, a tty),
batches split into events as the relay splits them, status/pull/notice
events between, `done` or not (live), a torn tail. The cuts are made small
(MAX_LINE_CHARS, MAX_PAGE_CHARS, the tail, the read windows) so that huge
lines, cut pages and many windows come up in small examples.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend.events import EventType
from backend.runs.lines import LineAssembler, LogBatch
from backend.runs.progress import PullProgress
from backend.storage import tail
from backend.storage.eventlog import EventLog
from backend.storage.reader import Line
from backend.web import snapshot
from backend.web.snapshot import build_snapshot, lines_before, tail_snapshot

LINES_PER_EVENT = 3  # the relay's MAX_LINES_PER_EVENT, small
LAYER = "a1b2c3d4e5f6"

_TEXT = st.text(alphabet=st.sampled_from("ab\n\n\u00e9"), min_size=1, max_size=14)
_OP = st.one_of(
    st.tuples(st.just("out"), st.sampled_from(["stdout", "stderr"]), _TEXT),
    st.tuples(st.just("flush"), st.just(""), st.just("")),
    st.tuples(st.sampled_from(["status", "pull", "notice"]), st.just(""), st.just("")),
)


@pytest.fixture(autouse=True)
def small_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MAX_LINE_CHARS", 6)
    monkeypatch.setattr(snapshot, "MAX_PAGE_CHARS", 20)
    monkeypatch.setattr(tail, "READ_CHUNK", 300)
    monkeypatch.setattr(tail, "WINDOW", 40)
    monkeypatch.setattr(tail, "FOLLOW_CHUNK", 50)


class Writer:
    """Appends events to an EventLog as the relay and the pipeline do."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.assembler = LineAssembler(partial_delay=0.25)
        self.progress = PullProgress()
        self.now = 0.0

    def batches(self, batches: list[LogBatch]) -> Iterator[int]:
        for batch in batches:
            for start in range(0, len(batch.lines), LINES_PER_EVENT):
                more = start + LINES_PER_EVENT < len(batch.lines)
                data = {
                    "stream": batch.stream,
                    "at": f"t{self.now}",
                    "first": batch.first + start,
                    "lines": batch.lines[start : start + LINES_PER_EVENT],
                    "partial": batch.partial and not more,
                }
                yield self.log.append(EventType.LOG, data)

    def op(self, kind: str, stream: str, text: str, tty: bool) -> Iterator[int]:
        self.now += 0.1
        if kind == "out":
            out = self.assembler.feed("tty" if tty else stream, text.encode(), self.now, self.now)
            yield from self.batches(out)
        elif kind == "flush":
            self.now += 1
            yield from self.batches(self.assembler.flush_due(self.now))
        elif kind == "status":
            yield self.log.append(EventType.STATUS, {"status": "running", "at": f"t{self.now}"})
        elif kind == "pull":
            message = {"status": "Downloading", "id": LAYER, "progressDetail": {"current": 1}}
            yield self.log.append(EventType.PULL, self.progress.update(message))
        else:
            yield self.log.append(EventType.NOTICE, {"message": f"n{self.now}"})

    def finish(self) -> None:
        list(self.batches(self.assembler.finish()))
        self.log.append(EventType.DONE, {"status": "succeeded", "exit_code": 0})


def reference_lines(path: Path) -> list[Line]:
    """Every line, cut as the snapshot cuts them, by the full replay."""
    return list(build_snapshot(path, tail_lines=10**9).lines)


def expected_page(every: list[Line], before: int, limit: int) -> list[dict[str, Any]]:
    below = [line for line in every if line.n < before][-limit:] if limit else []
    return [line.as_dict() for line in tail.page_lines(below, snapshot.MAX_PAGE_CHARS)]


def check_pages(log: EventLog, every: list[Line], limit: int) -> None:
    """Paging back from the end gets every line once, in order, as the reference."""
    got: list[dict[str, Any]] = []
    before = log.total_lines + 1
    while True:
        lines, first, earlier = lines_before(log, before, limit)
        page = [line.as_dict() for line in lines]
        assert page == expected_page(every, before, limit)
        assert first == (lines[0].n if lines else before)
        assert earlier == (bool(lines) and lines[0].n > 1)
        got[:0] = page
        if not earlier:
            break
        before = first
    # Lines cut out of a page by the character budget are in the next one.
    assert got == [line.as_dict() for line in every]


def run_case(
    ops: list[tuple[str, str, str]], tty: bool, finished: bool, tail_lines: int, torn: int
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "r.events"
            log = EventLog(path, loop)
            writer = Writer(log)
            log.append(EventType.STATUS, {"status": "queued", "at": "t0"})
            for kind, stream, text in ops:
                for _ in writer.op(kind, stream, text, tty):
                    # A live run: the same snapshot after every event.
                    live = tail_snapshot(log, tail_lines).as_dict()
                    assert live == build_snapshot(path, tail_lines=tail_lines).as_dict()
            if finished:
                writer.finish()
            if torn:  # a torn final write (a crash): not an event yet
                with open(path, "ab") as f:
                    f.write(b"id: 999\nevent: log\ndata: {"[:torn])
            want = build_snapshot(path, tail_lines=tail_lines).as_dict()
            assert tail_snapshot(log, tail_lines).as_dict() == want
            log.close()
            loaded = EventLog.load(path, loop)
            assert tail_snapshot(loaded, tail_lines).as_dict() == want
            every = reference_lines(path)
            for limit in (1, 2, 5):
                check_pages(loaded, every, limit)
    finally:
        loop.close()


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(_OP, max_size=14),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 3, 1000]),
    st.integers(min_value=0, max_value=20),
)
@example(  # a line open on stdout while stderr prints, then completed alone
    [
        ("out", "stdout", "ab"),
        ("flush", "", ""),
        ("out", "stderr", "a\na\na\na\n"),
        ("out", "stdout", "bbbbbbbb\nb\n"),
    ],
    False,
    True,
    3,
    0,
)
@example(  # a line sent in many parts, past MAX_LINE_CHARS, still open at the end
    [("out", "stdout", "x\n")] + [("out", "stdout", "aaa"), ("flush", "", "")] * 5,
    False,
    False,
    1000,
    5,
)
@example([("out", "stdout", "a\n" * 30)], True, True, 1000, 0)  # a page cut by characters
def test_the_tail_snapshot_is_the_full_replays(
    ops: list[tuple[str, str, str]], tty: bool, finished: bool, tail_lines: int, torn: int
) -> None:
    run_case(ops, tty, finished, tail_lines, torn)


def test_a_run_without_events_or_lines(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        log = EventLog(tmp_path / "r.events", loop)
        empty = tail_snapshot(log).as_dict()
        assert empty["lines"] == [] and empty["first_line"] == 1 and not empty["earlier"]
        assert lines_before(log, 5, 10) == ([], 5, False)
        log.append(EventType.STATUS, {"status": "queued", "at": "t"})
        assert tail_snapshot(log).as_dict() == build_snapshot(log.path).as_dict()
        assert lines_before(log, 1, 10) == ([], 1, False)
    finally:
        loop.close()


def test_the_snapshot_tells_where_its_lines_start(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        log = EventLog(tmp_path / "r.events", loop)
        data = {"stream": "stdout", "at": "t", "first": 1, "lines": ["l"] * 7, "partial": False}
        log.append(EventType.LOG, data)
        snap = tail_snapshot(log, tail_lines=3).as_dict()
        assert [line["n"] for line in snap["lines"]] == [5, 6, 7]
        assert snap["first_line"] == 5 and snap["earlier"] is True and snap["total_lines"] == 7
        lines, first, earlier = lines_before(log, 5, 1000)
        assert [line.n for line in lines] == [1, 2, 3, 4] and first == 1 and not earlier
        lines, first, earlier = lines_before(log, 10**9, 2)  # past the end: the newest
        assert [line.n for line in lines] == [6, 7] and first == 6 and earlier
    finally:
        loop.close()


def test_the_snapshot_and_a_page_read_the_bytes_of_their_lines_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "MAX_LINE_CHARS", 1_000_001)
    monkeypatch.setattr(snapshot, "MAX_PAGE_CHARS", 4_000_000)
    monkeypatch.setattr(tail, "READ_CHUNK", 1 << 20)
    monkeypatch.setattr(tail, "WINDOW", 1 << 20)
    monkeypatch.setattr(tail, "FOLLOW_CHUNK", 1 << 16)
    loop = asyncio.new_event_loop()
    try:
        path = tmp_path / "r.events"
        log = EventLog(path, loop)
        log.append(EventType.STATUS, {"status": "running", "at": "t"})
        for i in range(2000):  # 200,000 lines, 100 an event
            lines = [f"line {100 * i + k + 1:07d}" for k in range(100)]
            data = {"stream": "stdout", "at": "t", "first": 100 * i + 1, "lines": lines}
            log.append(EventType.LOG, {**data, "partial": False})
        log.append(EventType.DONE, {"status": "succeeded"})
        log.close()
        loaded = EventLog.load(path, loop)
        event_size = path.stat().st_size // 2000
        read: list[int] = []
        real = os.pread

        def counted(fd: int, n: int, offset: int) -> bytes:
            data = real(fd, n, offset)
            read.append(len(data))
            return data

        monkeypatch.setattr(os, "pread", counted)
        snap = tail_snapshot(loaded, tail_lines=1000).as_dict()
        assert [x["n"] for x in snap["lines"]] == list(range(199_001, 200_001))
        assert snap["done"] == {"status": "succeeded"} and snap["status"] == "running"
        assert sum(read) <= 12 * event_size  # the 10 events of its lines, and the rest
        read.clear()
        lines, first, earlier = lines_before(loaded, 50_001, 1000)
        assert first == 49_001 and earlier and lines[-1].text == "line 0050000"
        assert sum(read) <= 11 * event_size
    finally:
        loop.close()
