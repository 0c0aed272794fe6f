"""The room a live log claims, in steps (storage/eventlog.py), and the free
figure taken only when it matters (storage/space.py): how many fallocate and
statvfs calls a run's events cost, and that the limits stay exact near
min_free_bytes."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from backend.errors import DiskFull
from backend.events import EventType
from backend.storage import eventlog as eventlog_module
from backend.storage import space as space_module
from backend.storage.eventlog import RECORD, RESERVE, RESERVE_STEP, EventLog
from backend.storage.space import FREE_SLACK, DataDirSpace

MIN_FREE = 1024**2
FAR = 10 * 1024**3  # free, far from the limit


class Disk:
    """statvfs and fallocate as the log sees them, counted: `free` is the
    figure statvfs answers; `full` makes a claim past `limit` bytes answer
    ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free: int = FAR) -> None:
        self.free = free
        self.statvfs = 0
        self.claims: list[tuple[int, int]] = []
        self.full_past: int | None = None
        real_reserve = eventlog_module.reserve

        def _free(folder: Path) -> int:
            self.statvfs += 1
            return self.free

        def reserve(fd: int, offset: int, length: int) -> bool:
            self.claims.append((offset, length))
            if self.full_past is not None and length > self.full_past:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_reserve(fd, offset, length)

        monkeypatch.setattr(space_module, "_free", _free)
        monkeypatch.setattr(eventlog_module, "reserve", reserve)
        monkeypatch.setattr(space_module, "FREE_TTL", 3600.0)  # no figure grows old here


def make_log(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> tuple[EventLog, DataDirSpace]:
    space = DataDirSpace(tmp_path / "data", MIN_FREE)
    space.prepare()
    return EventLog(space.events_dir / "a.events", loop, space), space


def line(n: int) -> dict[str, object]:
    return {"stream": "stdout", "first": n, "lines": [f"line {n} " + "x" * 80]}


def test_small_events_claim_room_in_steps_and_take_one_free_figure(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    log, _ = make_log(tmp_path, loop)
    log.append(EventType.STATUS, {"status": "running"})
    for n in range(1, 2001):
        log.append(EventType.LOG, line(n))
    # ~200 KB of events: a fallocate per RESERVE_STEP bytes or so, not one per event.
    assert 2 <= len(disk.claims) <= log.size // RESERVE_STEP + 2
    assert disk.statvfs == 1  # far from the limit, and claimed less than FREE_SLACK since
    assert all(length >= RESERVE + RESERVE_STEP for _, length in disk.claims)
    log.append(EventType.DONE, {"status": "succeeded"})
    assert os.path.getsize(log.path) == log.size


def test_a_live_log_keeps_between_reserve_and_reserve_plus_a_step_past_its_end(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    path = tmp_path / "run.events"
    log = EventLog(path, loop)
    log.append(EventType.STATUS, {"status": "running"})
    if os.stat(path).st_blocks * 512 < RESERVE:
        pytest.skip("this filesystem does not preallocate (min_free_bytes alone keeps room)")
    for n in range(1, 3001):
        size = log.append(EventType.LOG, line(n)) and log.size
        allocated = os.stat(path).st_blocks * 512
        assert allocated >= size + RESERVE
        assert allocated <= size + RESERVE + RESERVE_STEP + 2 * 4096  # (block rounding)
    log.append(EventType.DONE, {"status": "succeeded"})
    assert os.stat(path).st_blocks * 512 < log.size + RESERVE  # released


def test_a_big_event_claims_its_own_size_and_a_step_past_it(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    log, _ = make_log(tmp_path, loop)
    log.append(EventType.STATUS, {"status": "running"})
    start = log.size
    log.append(EventType.LOG, {"stream": "stdout", "first": 1, "lines": ["y" * 300_000]})
    offset, length = disk.claims[-1]
    assert offset == start and length == log.size - start + RESERVE + RESERVE_STEP


def test_near_the_limit_every_event_takes_a_free_figure_and_claims_just_its_room(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=MIN_FREE + RESERVE + 1000)
    log, _ = make_log(tmp_path, loop)
    log.append(EventType.STATUS, {"status": "running"})
    disk.free = MIN_FREE + 1000  # room for a few events, not for a step
    before = disk.statvfs
    for n in range(1, 6):
        log.append(EventType.LOG, line(n))
    assert disk.statvfs - before >= 5  # exact: a figure of now for each
    assert all(length < RESERVE + RESERVE_STEP for _, length in disk.claims), disk.claims


def test_the_limit_is_exact_to_the_byte(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=MIN_FREE + RESERVE + RESERVE_STEP + 10_000)  # near
    log, _ = make_log(tmp_path, loop)
    log.append(EventType.STATUS, {"status": "running"})
    assert disk.claims[-1][1] > RESERVE + RESERVE_STEP  # a step
    while log._reserved_to - log.size >= RESERVE + 200:  # use the step up
        log.append(EventType.LOG, line(1))
    raw = eventlog_module.encode_event(log.last_id + 1, EventType.LOG, line(2))
    # The next event needs its own size and its index record (RESERVE is there):
    disk.free = MIN_FREE + len(raw) + RECORD.size - 1
    size = log.size
    with pytest.raises(DiskFull, match="the data dir is full: "):
        log.append(EventType.LOG, line(2))
    assert log.size == size  # unchanged, and it still takes its `done`
    disk.free += 1  # one byte more: it fits, with RESERVE past it and no step
    log.append(EventType.LOG, line(2))
    assert disk.claims[-1] == (size, len(raw) + RESERVE)
    log.append(EventType.DONE, {"status": "succeeded"})


def test_a_step_the_filesystem_refuses_falls_back_to_the_events_own_room(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    log, _ = make_log(tmp_path, loop)
    disk.full_past = RESERVE + 1000  # something else filled the disk (past min_free_bytes)
    log.append(EventType.STATUS, {"status": "running"})
    assert [length for _, length in disk.claims][-2:] == [
        log.size + RESERVE + RESERVE_STEP,
        log.size + RESERVE,
    ]
    disk.full_past = 0  # nothing at all: the next claim is refused, `done` still fits
    with pytest.raises(DiskFull, match="No space left on device"):
        for n in range(1, 2000):
            log.append(EventType.LOG, line(n))
    log.append(EventType.DONE, {"status": "error"})
    assert os.path.getsize(log.path) == log.size


def test_the_free_figure_is_estimated_far_from_the_limit_and_taken_near_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=2 * MIN_FREE + FREE_SLACK + 10 * 4096)
    space = DataDirSpace(tmp_path / "data", MIN_FREE)
    space.prepare()
    for _ in range(10):
        space.check(4096)  # the first takes a figure, the others subtract what they claim
        disk.free -= 4096  # (written)
    assert disk.statvfs == 1
    assert space.free() == disk.free  # an estimate: still FREE_SLACK above twice the limit
    assert disk.statvfs == 1
    for _ in range(3):
        space.check(4096)  # the last two within FREE_SLACK of it: a figure each
        disk.free -= 4096
    assert disk.statvfs == 3
    disk.free = MIN_FREE + 4096  # someone else took the rest: seen at once now
    with pytest.raises(DiskFull):
        space.check(4097)
    space.check(4096)


def test_a_big_claim_far_from_the_limit_takes_a_figure_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=FAR)
    space = DataDirSpace(tmp_path / "data", MIN_FREE)
    space.prepare()
    space.check(100)
    disk.free = MIN_FREE + 1000  # unseen as yet
    space.check(100)
    assert disk.statvfs == 1
    with pytest.raises(DiskFull):  # its need reaches within FREE_SLACK: exact
        space.check(FAR - MIN_FREE - FREE_SLACK + 1)
    assert disk.statvfs == 2


def test_the_free_figure_grows_old_and_deletes_make_it_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    space = DataDirSpace(tmp_path / "data", MIN_FREE)
    space.prepare()
    space.check(100)
    space.check(100)
    assert disk.statvfs == 1
    path = space.events_dir / "old.events"
    path.write_bytes(b"x" * 10)
    space.remove(path)
    space.check(100)  # room was freed: a new figure
    assert disk.statvfs == 2
    monkeypatch.setattr(space_module, "FREE_TTL", 0.0)
    space.check(100)
    space.check(100)
    assert disk.statvfs == 4


def test_no_min_free_bytes_no_free_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch)
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    space.check(1 << 40)
    assert disk.statvfs == 0
