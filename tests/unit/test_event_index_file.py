"""The persisted event index (`<run>.idx`, storage/eventlog.py): written by
append, read by load instead of a scan, completed after a crash, rebuilt
when missing or malformed, best effort on a full disk."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.events import EventType
from backend.storage import eventlog
from backend.storage.eventlog import RECORD, EventLog
from backend.storage.space import DataDirSpace, index_path


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def log_data(first: int, lines: list[str], partial: bool = False) -> dict[str, Any]:
    return {"stream": "stdout", "at": "t", "first": first, "lines": lines, "partial": partial}


def write_run(path: Path, loop: asyncio.AbstractEventLoop, done: bool = True) -> EventLog:
    log = EventLog(path, loop)
    log.append(EventType.STATUS, {"status": "running", "at": "t"})
    log.append(EventType.LOG, log_data(1, ["a", "b"]))
    log.append(EventType.LOG, log_data(3, ["par"], partial=True))
    log.append(EventType.NOTICE, {"message": "hello"})
    log.append(EventType.LOG, log_data(3, ["tial", "c", "d"]))
    log.append(EventType.LOG, log_data(6, ["e"], partial=True))
    log.append(EventType.LOG, log_data(6, ["f"], partial=True))  # begins no line
    log.append("other", {"x": 1})
    if done:
        log.append(EventType.DONE, {"status": "succeeded"})
    return log


def view(log: EventLog) -> tuple[list[int], list[int], list[int], bool]:
    index = log.index()
    return list(index.ends), list(index.lines), index.non_log(), log.finished


def test_append_writes_a_record_per_event_and_load_reads_them(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.events"
    written = write_run(path, loop)
    ends, lines, marks, finished = view(written)
    assert lines == [0, 2, 3, 3, 5, 6, 6, 6, 6]  # the highest line begun through each
    assert marks == [0, 3, 7, 8] and finished
    assert ends[-1] == path.stat().st_size
    raw = index_path(path).read_bytes()
    assert len(raw) == 9 * RECORD.size
    assert [RECORD.unpack_from(raw, 16 * i)[0] >> 56 for i in range(9)] == [
        1,
        0,
        0,
        3,
        0,
        0,
        0,
        5,
        4,
    ]

    def no_scan(*_: object) -> None:
        raise AssertionError("the file was scanned")

    monkeypatch.setattr(eventlog, "scan_events", no_scan)
    loaded = EventLog.load(path, loop)
    assert view(loaded) == (ends, lines, marks, True)
    assert loaded.total_lines == 6 and loaded.last_id == 9


@pytest.mark.parametrize("done", [True, False])
def test_a_missing_index_is_rebuilt_and_saved_once_the_run_is_finished(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, done: bool
) -> None:
    path = tmp_path / "r.events"
    want = view(write_run(path, loop, done=done))
    raw = index_path(path).read_bytes()
    index_path(path).unlink()  # a run written by an older version
    loaded = EventLog.load(path, loop)
    assert view(loaded) == want
    if not done:
        assert not index_path(path).exists()  # its next append writes it all
        loaded.append(EventType.DONE, {"status": "succeeded"})
        assert len(index_path(path).read_bytes()) == len(raw) + RECORD.size
        assert view(EventLog.load(path, loop))[3]
    else:
        assert index_path(path).read_bytes() == raw


@pytest.mark.parametrize("keep", [0, 1, 5, 8])
@pytest.mark.parametrize("torn", [0, 7])
def test_an_index_behind_its_file_is_completed_from_the_rest(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, keep: int, torn: int
) -> None:
    path = tmp_path / "r.events"
    want = view(write_run(path, loop))
    raw = index_path(path).read_bytes()
    index_path(path).write_bytes(raw[: keep * RECORD.size + torn])  # a crash between writes
    assert view(EventLog.load(path, loop)) == want
    assert index_path(path).read_bytes() == raw  # finished: completed on disk


def test_records_past_the_files_end_are_dropped(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    path = tmp_path / "r.events"
    ends, lines, _, _ = view(write_run(path, loop))
    with open(path, "r+b") as f:  # the file lost its last events, the index did not
        f.truncate(ends[4] + 10)
    loaded = EventLog.load(path, loop)
    assert view(loaded) == (ends[:5], lines[:5], [0, 3], False)
    assert path.stat().st_size == ends[4]  # the torn rest dropped
    loaded.append(EventType.LOG, log_data(6, ["g"]))
    loaded.append(EventType.DONE, {"status": "succeeded"})
    again = EventLog.load(path, loop)
    assert view(again)[1] == [*lines[:5], 6, 6] and again.finished
    assert len(index_path(path).read_bytes()) == 7 * RECORD.size


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00" * 64,  # zeros: the first record's event is not there
        b"\xff" * 48,  # kinds no index has
        b"garbage",  # shorter than a record
        "other",  # another run's index
    ],
)
def test_a_malformed_index_is_rebuilt(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, junk: bytes | str
) -> None:
    path = tmp_path / "r.events"
    want = view(write_run(path, loop))
    raw = index_path(path).read_bytes()
    if junk == "other":
        other = tmp_path / "o.events"
        log = EventLog(other, loop)
        log.append(EventType.LOG, log_data(1, ["x" * 500]))
        log.append(EventType.DONE, {})
        junk = index_path(other).read_bytes()
    assert isinstance(junk, bytes)
    index_path(path).write_bytes(junk)
    assert view(EventLog.load(path, loop)) == want
    assert index_path(path).read_bytes() == raw


def test_a_full_disk_leaves_the_index_behind_never_the_events(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    path = space.events_dir / "r.events"
    log = EventLog(path, loop, space)
    log.append(EventType.LOG, log_data(1, ["a"]))
    real = eventlog._pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def half(fd: int, data: bytes, offset: int) -> int:
        return real(fd, data[: RECORD.size + 5], offset)  # a record and a torn one

    monkeypatch.setattr(eventlog, "_pwrite", full)
    log.append(EventType.LOG, log_data(2, ["b"]))
    log.append(EventType.NOTICE, {"message": "m"})
    assert len(index_path(path).read_bytes()) == RECORD.size
    monkeypatch.setattr(eventlog, "_pwrite", half)
    log.append(EventType.LOG, log_data(3, ["c"]))  # catches up, in part
    monkeypatch.setattr(eventlog, "_pwrite", full)
    log.append(EventType.DONE, {"status": "error"})  # its record too is lost
    want = view(log)
    assert want[1] == [1, 2, 2, 3, 3] and want[3]
    assert len(index_path(path).read_bytes()) == 2 * RECORD.size  # (the torn one cut)
    assert space.events_bytes == path.stat().st_size + index_path(path).stat().st_size
    monkeypatch.setattr(eventlog, "_pwrite", real)
    loaded = EventLog.load(path, loop, space)
    assert view(loaded) == want
    assert len(index_path(path).read_bytes()) == 5 * RECORD.size
    assert space.events_bytes == path.stat().st_size + index_path(path).stat().st_size
    assert space.remove(path) > 0 and not index_path(path).exists() and space.events_bytes == 0
