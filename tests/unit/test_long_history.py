"""A long history (issue 12, benchmark 17): what the server does at start with
the store and the data dir does not grow with it.

- RunStore.unfinished searches the status index (the old `status NOT IN` walked
  the whole table: 2.5 s at a million runs) and lists the same runs.
- RunStore.page over a small store: the same pages as a plain filter of the
  runs, newest first, through the cursor chain, with and without statuses.
- DataDirSpace counts the event files in a thread of its own at a server's
  start; the total is exact while runs write and delete meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

import pytest

from backend.engines.fake import FakeDocker
from backend.models import RunRecord, RunStatus
from backend.storage import space as space_module
from backend.storage.space import COUNT_FILE, DataDirSpace
from backend.storage.store import _TERMINAL, RunStore
from tests.unit.conftest import MakeRunner, on_loop, wait_until
from tests.unit.test_retention import event_files_total, finished_run, printing

# Every status, then again (so each status has runs at several places in seq order).
STATUSES = [*RunStatus, *reversed(list(RunStatus)), RunStatus.FAILED, RunStatus.RUNNING]


def record(n: int, status: RunStatus) -> RunRecord:
    run_id = f"{n:012x}"
    return RunRecord.model_validate(
        {
            "id": run_id,
            "status": status.value,
            "spec": {"image": "busybox", "command": ["echo", str(n)]},
            "created_at": f"2026-01-01T00:00:{n:02d}.000Z",
            "links": {"self": "/", "events": "/", "logs": "/", "page": "/"},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    store = RunStore(tmp_path / "pullrun.db")
    for n, status in enumerate(STATUSES):
        store.insert(record(n, status))
    yield store
    store.close()


def plan(store: RunStore, sql: str, args: list[object]) -> list[str]:
    with store._lock:
        return [row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, args)]


# -- unfinished ------------------------------------------------------------------------------


def test_unfinished_lists_what_the_old_query_listed_oldest_first(store: RunStore) -> None:
    old_sql = (
        f"SELECT id FROM runs WHERE status NOT IN ({','.join('?' * len(_TERMINAL))}) ORDER BY seq"
    )
    with store._lock:
        before = [row[0] for row in store._db.execute(old_sql, _TERMINAL)]
    got = [r.id for r in store.unfinished()]
    assert got == before
    assert got == [f"{n:012x}" for n, s in enumerate(STATUSES) if not s.terminal]
    assert len(got) == 2 * sum(1 for s in RunStatus if not s.terminal) + 1


def test_unfinished_searches_the_status_index_never_the_whole_table(store: RunStore) -> None:
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)  # the SQL as run, values in place
    try:
        store.unfinished()
    finally:
        store._db.set_trace_callback(None)
    (sql,) = statements
    steps = plan(store, sql, [])
    assert any("USING INDEX runs_by_status" in step for step in steps), steps
    assert not any(step.startswith("SCAN runs") for step in steps), steps


# -- page ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statuses",
    [
        None,
        [RunStatus.FAILED],
        [RunStatus.SUCCEEDED, RunStatus.FAILED],
        [RunStatus.FAILED, RunStatus.ERROR, RunStatus.CANCELED, RunStatus.TIMED_OUT],
        [RunStatus.RUNNING, RunStatus.QUEUED],
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 50])
def test_pages_follow_the_cursor_chain_newest_first(
    store: RunStore, statuses: list[RunStatus] | None, limit: int
) -> None:
    want = [
        f"{n:012x}"
        for n, s in reversed(list(enumerate(STATUSES)))
        if statuses is None or s in statuses
    ]
    got: list[str] = []
    cursor: str | None = None
    while True:
        records, cursor = store.page(statuses, cursor, limit)
        assert len(records) <= limit
        got += [r.id for r in records]
        if cursor is None:
            break
        assert cursor == got[-1]
    assert got == want


def test_a_cursor_of_no_run_gives_an_empty_page(store: RunStore) -> None:
    assert store.page(None, "nosuchrun", 10) == ([], None)
    assert store.page([RunStatus.FAILED], "nosuchrun", 10) == ([], None)


# -- the count of the event files ------------------------------------------------------------


Scandir = Callable[[str | os.PathLike[str]], AbstractContextManager[Iterator[os.DirEntry[str]]]]


class HeldScandir:
    """os.scandir of events/ that lists the folder at once (sorted), yields the
    first entry, then waits for `release` before the others."""

    def __init__(
        self, path: str | os.PathLike[str], real: Scandir, release: threading.Event
    ) -> None:
        with real(path) as entries:
            self.entries = sorted(entries, key=lambda e: e.name)
        self.release = release

    def __enter__(self) -> Iterator[os.DirEntry[str]]:
        return self._entries()

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        for i, entry in enumerate(self.entries):
            if i == 1:
                HELD.set()
                self.release.wait(30)
            yield entry

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


HELD = threading.Event()


def files_total(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_a_background_count_is_exact_while_logs_grow_and_new_ones_begin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    events = data / "events"
    events.mkdir(parents=True)
    (events / "a.events").write_bytes(b"a" * 1000)  # counted before it grows
    (events / "b.events").write_bytes(b"b" * 500)  # grows before it is counted
    (events / "b.idx").write_bytes(b"i" * 32)
    (events / "c.events").write_bytes(b"c" * 700)
    os.chmod(events / "c.events", 0o644)  # an older version's mode: tightened
    release = threading.Event()
    real = os.scandir
    HELD.clear()

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path) == events:
            return HeldScandir(path, real, release)
        return real(path)

    monkeypatch.setattr(space_module.os, "scandir", scandir)
    space = DataDirSpace(data, 0)
    space.prepare(background=True)
    wait_until(HELD.is_set, "the walk to hold after its first entry (a.events)")

    def grow(name: str, n: int) -> None:
        with open(events / name, "ab") as f:
            f.write(b"x" * n)
        space.grew(n, path=events / name)

    grow("a.events", 100)
    grow("b.events", 200)
    grow("b.idx", 16)
    grow("d.events", 300)  # a new run's log: the walk's listing is older
    answers: list[int] = []
    reader = threading.Thread(target=lambda: answers.append(space.events_bytes))
    reader.start()
    assert not answers  # it waits for the count
    release.set()
    reader.join(30)
    assert answers == [files_total(events)] == [1100 + 700 + 48 + 700 + 300]
    assert space.events_bytes == files_total(events)
    assert (events / "c.events").stat().st_mode & 0o777 == 0o600
    # From here, as ever: appends and deletes move the total.
    grow("c.events", 50)
    assert space.remove(events / "b.events") == 700 + 48
    assert space.events_bytes == files_total(events)


def test_a_delete_during_the_count_waits_for_it_and_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    events = data / "events"
    events.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (events / f"{name}.events").write_bytes(b"x" * 1000)
    release = threading.Event()
    real = os.scandir
    HELD.clear()

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path) == events:
            return HeldScandir(path, real, release)
        return real(path)

    monkeypatch.setattr(space_module.os, "scandir", scandir)
    space = DataDirSpace(data, 0)
    space.prepare(background=True)
    wait_until(HELD.is_set, "the walk to hold after its first entry")
    freed: list[int] = []
    deleter = threading.Thread(target=lambda: freed.append(space.remove(events / "c.events")))
    deleter.start()
    assert (events / "c.events").exists() and not freed  # it waits for the count
    release.set()
    deleter.join(30)
    assert freed == [1000] and not (events / "c.events").exists()
    assert space.events_bytes == files_total(events) == 2000


def test_prepare_counts_at_once_by_default(tmp_path: Path) -> None:
    events = tmp_path / "data" / "events"
    events.mkdir(parents=True)
    (events / "a.events").write_bytes(b"x" * 123)
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    assert space._counted.is_set() and space.events_bytes == 123


# -- the total saved at a clean stop ---------------------------------------------------------


def counted_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[DataDirSpace, list[str]]:
    """A prepared space over a data dir with two logs; the folders each walk lists."""
    events = tmp_path / "data" / "events"
    events.mkdir(parents=True, exist_ok=True)
    for name in ("a.events", "a.idx"):
        (events / name).write_bytes(b"x" * 100)
    walked: list[str] = []
    real = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        walked.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(space_module.os, "scandir", scandir)
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    return space, walked


def test_a_clean_stop_saves_the_total_and_the_next_start_takes_it_without_a_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space, walked = counted_space(tmp_path, monkeypatch)
    assert walked == ["data", "events"] and space.events_bytes == 200
    space.grew(50, path=space.events_dir / "a.events")
    with open(space.events_dir / "a.events", "ab") as f:
        f.write(b"y" * 50)
    assert space.save_count()
    saved = tmp_path / "data" / COUNT_FILE
    assert saved.stat().st_mode & 0o777 == 0o600
    walked.clear()
    again = DataDirSpace(tmp_path / "data", 0)
    again.prepare(background=True)
    assert walked == [] and again.events_bytes == 250 == files_total(space.events_dir)
    assert not saved.exists()  # once: a crash after this start walks
    third = DataDirSpace(tmp_path / "data", 0)
    third.prepare()
    assert walked == ["data", "events"] and third.events_bytes == 250


@pytest.mark.parametrize("change", ["append", "delete", "new file by hand", "delete by hand"])
def test_a_change_after_the_save_means_a_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    space, walked = counted_space(tmp_path, monkeypatch)
    (space.events_dir / "b.events").write_bytes(b"z" * 10)
    space.grew(10, path=space.events_dir / "b.events")
    # (the folder's times tick coarsely: set them apart from the change below)
    os.utime(space.events_dir, ns=(1, 1))
    assert space.save_count()
    saved = tmp_path / "data" / COUNT_FILE
    if change == "append":  # (a request loads an old run and writes its index)
        with open(space.events_dir / "b.events", "ab") as f:
            f.write(b"z" * 5)
        space.grew(5, path=space.events_dir / "b.events")
        assert not saved.exists()
    elif change == "delete":
        space.remove(space.events_dir / "b.events")
        assert not saved.exists()
    elif change == "new file by hand":
        (space.events_dir / "c.events").write_bytes(b"c" * 7)
    else:
        (space.events_dir / "a.idx").unlink()
    walked.clear()
    again = DataDirSpace(tmp_path / "data", 0)
    again.prepare()
    assert walked == ["data", "events"]
    assert again.events_bytes == files_total(space.events_dir)


def test_an_unreadable_saved_total_means_a_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, walked = counted_space(tmp_path, monkeypatch)
    (tmp_path / "data" / COUNT_FILE).write_bytes(b"{not json")
    walked.clear()
    again = DataDirSpace(tmp_path / "data", 0)
    again.prepare()
    assert walked == ["data", "events"] and again.events_bytes == 200
    assert not (tmp_path / "data" / COUNT_FILE).exists()


def test_no_total_is_saved_while_the_count_at_start_is_not_done(tmp_path: Path) -> None:
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    space._counted.clear()  # (as while the walk goes on)
    assert not space.save_count()
    assert not (tmp_path / "data" / COUNT_FILE).exists()


def test_a_runner_stopped_cleanly_leaves_the_total_for_the_next_one(
    make_runner: MakeRunner, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    runner = make_runner()
    finished_run(runner, command=printing(daemon, 5_000))
    total = runner.space.events_bytes
    assert total == event_files_total(runner.settings) > 5_000
    on_loop(loop, runner.shutdown())
    assert (runner.settings.data_dir / COUNT_FILE).exists()
    again = DataDirSpace(runner.settings.data_dir, 0)
    again.prepare()
    assert again.events_bytes == total and not (runner.settings.data_dir / COUNT_FILE).exists()
