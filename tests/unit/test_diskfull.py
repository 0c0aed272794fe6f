"""A full data dir, with the in-memory engine and failures injected where the
disk answers (statvfs, fallocate, write, SQLite): a run whose log cannot be
written ends with `error` ("the data dir is full: ...") and its `done`, its
container is stopped; a new run is refused (507) and leaves nothing behind;
the server goes on; modes of the data dir and its files."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.engines.fake import FakeDocker, Gate, Program, stdout
from backend.errors import DiskFull
from backend.events import EventType
from backend.models import RunCreate, RunRecord, RunStatus
from backend.runs.runner import Runner
from backend.settings import Settings
from backend.storage import eventlog as eventlog_module
from backend.storage import space as space_module
from backend.storage.eventlog import RESERVE, EventLog, RunFeed
from backend.storage.space import DataDirSpace
from backend.storage.store import RunStore
from backend.web.app import create_app
from tests.unit.conftest import (
    BASE,
    MakeRunner,
    assert_ended,
    bearer,
    events_of,
    lines_of,
    make_token,
    on_loop,
    wait_until,
)
from tests.unit.test_runner import ended, running, submit

FULL = "the data dir is full: "


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def talker(daemon: FakeDocker, name: str) -> tuple[list[str], Gate, Gate]:
    """A container that prints a line, waits at `first`, prints another and
    waits at `second` (never opened by the tests: only a stop ends it)."""
    first, second = daemon.gate(f"{name}-1"), daemon.gate(f"{name}-2")
    command = ["talk", name]
    daemon.program(
        command,
        Program(output=[stdout(b"before\n"), first, stdout(b"after\n"), second], term_exit=143),
    )
    return command, first, second


def no_room(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the filesystem has less than min_free_bytes free."""
    monkeypatch.setattr(runner.space, "free", lambda: runner.space.min_free // 2)


def event_files(settings: Settings) -> list[str]:
    """The event files (their indexes, `.idx` beside them, left out)."""
    return sorted(p.name for p in settings.events_dir.iterdir() if p.suffix != ".idx")


def assert_full_error(record: RunRecord) -> None:
    assert record.status == RunStatus.ERROR, record
    assert record.error is not None and record.error.message.startswith(FULL), record.error


# -- a run whose output cannot be written ----------------------------------------------------


def test_below_min_free_bytes_a_run_ends_with_error_done_and_its_container_stopped(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner()
    command, first, _ = talker(daemon, "a")
    record = submit(runner, command=command, auto_remove=False)
    running(runner, record.id)
    wait_until(lambda: lines_of(events_of(runner.settings, record.id)), "the first line")

    no_room(runner, monkeypatch)
    first.release()  # "after" cannot be written
    final = ended(runner, record.id)
    assert_full_error(final)
    assert "PULLRUN_MIN_FREE_BYTES" in final.error.message  # type: ignore[union-attr]
    assert final.error.phase == "run"  # type: ignore[union-attr]
    assert lines_of(events_of(runner.settings, record.id)) == [("stdout", "before")]
    assert (final.log_lines, final.dropped_lines) == (2, 1)  # counted, never kept
    container = daemon.container_of(record.id)
    assert container is not None and container.signal == "TERM" and not container.running
    assert [c.args[0] for c in daemon.calls_of("stop")] == [container.id]


def test_the_container_of_a_run_that_filled_the_disk_is_removed_as_usual(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner()
    command, first, _ = talker(daemon, "a")
    record = submit(runner, command=command)  # auto_remove
    running(runner, record.id)
    no_room(runner, monkeypatch)
    first.release()
    assert_full_error(ended(runner, record.id))
    assert daemon.live_containers() == []


def test_a_write_the_filesystem_refuses_ends_the_run_and_leaves_no_torn_event(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner()
    command, first, _ = talker(daemon, "a")
    record = submit(runner, command=command)
    running(runner, record.id)
    wait_until(lambda: lines_of(events_of(runner.settings, record.id)), "the first line")
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if b"event: log" in bytes(data[:40]) and b"after" in bytes(data):
            real_write(fd, bytes(data[:10]))  # part of it goes in, then the disk is full
            raise enospc()
        return real_write(fd, data)

    monkeypatch.setattr(eventlog_module, "_write", write)
    first.release()
    final = ended(runner, record.id)  # (assert_ended: ids 1..n, done last, no torn bytes)
    assert_full_error(final)
    assert "No space left on device" in final.error.message  # type: ignore[union-attr]
    assert lines_of(events_of(runner.settings, record.id)) == [("stdout", "before")]


def test_when_no_room_can_be_claimed_the_run_ends_in_its_reserve(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fallocate answers ENOSPC (something else filled the disk, past
    min_free_bytes): output stops once what was preallocated past the log's
    end is used (its room is claimed in steps), `done` still goes into the
    reserve."""
    runner = make_runner()
    command, first = ["talk", "a"], daemon.gate("a-1")
    more = stdout(b"after\n" * (RESERVE // 2))  # past any step claimed before
    daemon.program(
        command,
        Program(output=[stdout(b"before\n"), first, more, daemon.gate("a-2")], term_exit=143),
    )
    record = submit(runner, command=command)
    running(runner, record.id)
    real_reserve = eventlog_module.reserve

    def reserve(fd: int, offset: int, length: int) -> bool:
        if offset > 0 and length > RESERVE:  # a claim for more output, not the reserve itself
            raise enospc()
        return real_reserve(fd, offset, length)

    monkeypatch.setattr(eventlog_module, "reserve", reserve)
    first.release()
    assert_full_error(ended(runner, record.id))


def test_other_runs_go_on_and_end_well_once_there_is_room_again(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(max_concurrent_runs=2)
    loud, loud_gate, _ = talker(daemon, "loud")
    quiet_gate = daemon.gate("quiet")
    daemon.program(["quiet"], Program(output=[quiet_gate, stdout(b"late\n")]))
    a = submit(runner, command=loud)
    b = submit(runner, command=["quiet"])
    running(runner, a.id)
    running(runner, b.id)
    free = runner.space.free
    no_room(runner, monkeypatch)
    loud_gate.release()
    assert_full_error(ended(runner, a.id))
    assert runner.get(b.id).status == RunStatus.RUNNING  # untouched while it is quiet
    monkeypatch.setattr(runner.space, "free", free)  # room again (runs were deleted)
    quiet_gate.release()
    assert ended(runner, b.id).status == RunStatus.SUCCEEDED
    assert ended(runner, submit(runner).id).status == RunStatus.SUCCEEDED


def test_a_status_change_with_no_room_ends_a_queued_run_with_its_done(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(max_concurrent_runs=1)
    command, first, _ = talker(daemon, "a")
    busy = submit(runner, command=command)
    running(runner, busy.id)
    queued = submit(runner)  # accepted: there was room
    no_room(runner, monkeypatch)
    first.release()
    assert_full_error(ended(runner, busy.id))
    final = ended(runner, queued.id)
    assert_full_error(final)
    assert final.error.phase in ("queue", "pull", "create")  # type: ignore[union-attr]


# -- a new run when nothing can be written ---------------------------------------------------


def test_a_new_run_is_refused_and_leaves_nothing_behind(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = event_files(runner.settings)
    no_room(runner, monkeypatch)
    with pytest.raises(DiskFull, match=FULL) as refused:
        submit(runner)
    assert refused.value.status_code == 507
    assert event_files(runner.settings) == before
    assert runner.page(None, None, 10)[0] == []
    assert runner.active == 0 and runner.queued == 0


def test_a_new_run_needs_room_for_output_while_running_runs_still_write(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between min_free_bytes and twice that: output goes on, new runs are refused."""
    runner = make_runner()
    command, first, second = talker(daemon, "a")
    record = submit(runner, command=command)
    running(runner, record.id)
    monkeypatch.setattr(runner.space, "free", lambda: runner.space.min_free * 3 // 2)
    with pytest.raises(DiskFull, match=FULL + ".* a new run needs 2.0 MiB"):
        submit(runner)
    first.release()
    wait_until(
        lambda: ("stdout", "after") in lines_of(events_of(runner.settings, record.id)),
        "the running run's next line",
    )
    second.release()
    assert ended(runner, record.id).status == RunStatus.SUCCEEDED


def test_a_refused_write_of_the_first_event_leaves_nothing_behind(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(fd: int, data: Any) -> int:
        raise enospc()

    monkeypatch.setattr(eventlog_module, "_write", write)
    with pytest.raises(DiskFull, match=FULL):
        submit(runner)
    assert event_files(runner.settings) == []
    assert runner.page(None, None, 10)[0] == []


def test_a_refused_insert_leaves_no_event_file(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def insert(record: RunRecord) -> None:
        raise DiskFull(FULL + "the run database answered database or disk is full")

    monkeypatch.setattr(runner.store, "insert", insert)
    with pytest.raises(DiskFull):
        submit(runner)
    assert event_files(runner.settings) == []
    assert runner.space.events_bytes == 0


def test_post_answers_507_with_the_error_and_the_server_goes_on(
    settings: Settings, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings, engine_factory=daemon)
    with TestClient(app, headers=bearer(make_token(settings))) as client:
        runner: Runner = app.state.runner
        ok = client.post("/api/runs", json={"image": BASE, "command": ["true"]})
        assert ok.status_code == 201, ok.text
        wait_until(lambda: runner.get(ok.json()["id"]).status.terminal, "the first run's end")
        no_room(runner, monkeypatch)
        refused = client.post("/api/runs", json={"image": BASE, "command": ["true"]})
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "disk_full" and error["message"].startswith(FULL)
        assert event_files(settings) == [f"{ok.json()['id']}.events"]
        listed = client.get("/api/runs")
        assert listed.status_code == 200 and len(listed.json()["runs"]) == 1
        assert client.delete(f"/api/runs/{ok.json()['id']}").status_code == 204


# -- the final save ---------------------------------------------------------------------------


def test_a_run_whose_final_record_cannot_be_saved_is_served_from_memory_then_saved(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = runner.store.save

    def save(record: RunRecord) -> None:
        if record.status.terminal:
            raise DiskFull(FULL + "the run database answered database or disk is full")
        real_save(record)

    monkeypatch.setattr(runner.store, "save", save)
    record = submit(runner)
    wait_until(lambda: runner.get(record.id).status.terminal, "the run to end")
    wait_until(lambda: record.id not in runner._active, "its worker to let go")
    assert runner.get(record.id).status == RunStatus.SUCCEEDED
    assert runner.page(None, None, 10)[0][0].status == RunStatus.SUCCEEDED
    stale = runner.store.get(record.id)
    assert stale is not None and not stale.status.terminal
    monkeypatch.setattr(runner.store, "save", real_save)  # room again
    runner.retention.sweep()
    saved = runner.store.get(record.id)
    assert saved is not None
    assert_ended(runner.settings, saved)


def test_a_done_that_cannot_be_written_anywhere_still_ends_the_record_and_followers(
    make_runner: MakeRunner,
    daemon: FakeDocker,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No preallocation on this filesystem and nothing left at all: the last resort."""
    runner = make_runner()
    monkeypatch.setattr(eventlog_module, "reserve", lambda fd, offset, length: False)
    command, first, _ = talker(daemon, "a")
    record = submit(runner, command=command)
    running(runner, record.id)
    log = runner.events(record.id)

    async def follow() -> list[bytes]:
        return [chunk async for chunk in log.follow()]

    follower = asyncio.run_coroutine_threadsafe(follow(), loop)
    wait_until(lambda: lines_of(events_of(runner.settings, record.id)), "the first line")

    def write(fd: int, data: Any) -> int:
        raise enospc()

    monkeypatch.setattr(eventlog_module, "_write", write)
    first.release()
    wait_until(lambda: record.id not in runner._active, "the run to end")
    final = runner.get(record.id)
    assert_full_error(final)
    assert runner.store.get(record.id) == final  # saved: the database had room
    assert b"before" in b"".join(follower.result(30))  # the follower ended


def test_delete_frees_the_log_first_when_the_database_has_no_room_to_delete(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = ended(runner, submit(runner).id)
    real_delete = runner.store.delete
    calls: list[bool] = []

    def delete(run_id: str) -> None:
        calls.append(runner.settings.events_file(run_id).exists())
        if len(calls) == 1:
            raise DiskFull(FULL + "the run database answered database or disk is full")
        real_delete(run_id)

    monkeypatch.setattr(runner.store, "delete", delete)
    runner.delete(record.id)
    assert calls == [True, False]  # the second try came after the log was gone
    assert runner.store.get(record.id) is None


def test_a_full_database_is_disk_full_not_a_500(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    try:
        with store._lock:
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")
        record = RunRecord.model_validate(
            {
                "id": "abc",
                "status": "queued",
                "spec": {"image": BASE, "env": {"K": "v" * 30_000}},
                "created_at": "2026-01-01T00:00:00.000Z",
                "links": {"self": "/", "events": "/", "logs": "/", "page": "/"},
            }
        )
        with pytest.raises(DiskFull, match=FULL + "the run database"):
            store.insert(record)
    finally:
        store.close()


# -- the event log and its reserve ------------------------------------------------------------


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_live_log_keeps_room_for_done_past_its_end_and_releases_it(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    path = tmp_path / "run.events"
    log = EventLog(path, loop)
    log.append(EventType.STATUS, {"status": "queued"})
    if allocated(path) < RESERVE:
        pytest.skip("this filesystem does not preallocate (min_free_bytes alone keeps room)")
    size = path.stat().st_size
    assert size == log.size  # readers see only whole events
    assert allocated(path) >= size + RESERVE
    log.append(EventType.LOG, {"lines": ["x" * 100_000]})
    assert allocated(path) >= log.size + RESERVE
    log.append(EventType.DONE, {"status": "succeeded"})
    assert allocated(path) < log.size + RESERVE  # released
    assert path.stat().st_size == log.size


def test_the_log_counts_what_it_writes_into_the_data_dir_total(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    space = DataDirSpace(tmp_path / "data", 0)
    space.prepare()
    log = EventLog(space.events_dir / "a.events", loop, space)
    for n in range(3):
        log.append(EventType.LOG, {"n": n})
    log.append(EventType.DONE, {})
    index = space.events_dir / "a.idx"  # 16 bytes an event, counted too
    assert log.size == (space.events_dir / "a.events").stat().st_size
    assert space.events_bytes == log.size + index.stat().st_size == log.size + 4 * 16
    log.discard()
    assert space.events_bytes == 0 and not (space.events_dir / "a.events").exists()
    assert not index.exists()


# -- modes ------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, str]:
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_data_dir_is_0700_and_every_file_in_it_0600(
    make_runner: MakeRunner, loose_umask: None
) -> None:
    runner = make_runner()
    ended(runner, submit(runner, command=["true"]).id)
    found = modes(runner.settings.data_dir)
    names = set(found)
    assert {".", "events", "pullrun.db", "pullrun.db-wal", "pullrun.db-shm"} <= names
    assert any(name.endswith(".events") for name in names)
    wrong = {
        name: mode
        for name, mode in found.items()
        if mode != ("0o700" if (runner.settings.data_dir / name).is_dir() else "0o600")
    }
    assert wrong == {}


def test_a_data_dir_left_readable_by_an_older_version_is_made_private(
    settings: Settings, loose_umask: None
) -> None:
    settings.events_dir.mkdir(parents=True, mode=0o755)
    settings.data_dir.chmod(0o755)
    (settings.events_dir / "old.events").write_bytes(b"")
    (settings.events_dir / "old.events").chmod(0o644)
    settings.db_path.write_bytes(b"")
    settings.db_path.chmod(0o644)
    DataDirSpace(settings.data_dir, 0).prepare()
    store = RunStore(settings.db_path)
    store.close()
    found = modes(settings.data_dir)
    assert found["."] == found["events"] == "0o700"
    assert found["events/old.events"] == found["pullrun.db"] == "0o600"


def test_the_app_sets_a_private_umask_while_it_runs(
    settings: Settings, daemon: FakeDocker, loose_umask: None
) -> None:
    app = create_app(settings, engine_factory=daemon)
    with TestClient(app, headers=bearer(make_token(settings))):
        current = os.umask(0o077)
        os.umask(current)
        assert current == 0o077
        probe = settings.data_dir / "probe"
        probe.write_bytes(b"")  # a file made by anything else in the process
        assert oct(stat.S_IMODE(probe.stat().st_mode)) == "0o600"
        probe.unlink()
    current = os.umask(0o022)
    assert current == 0o022  # restored when it stops


def test_recovery_with_no_room_for_done_still_starts(
    settings: Settings,
    daemon: FakeDocker,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash left a run unfinished and the disk full: the server starts anyway."""
    store = RunStore(settings.db_path)
    first = Runner(settings, store, RunFeed(boot="a"), loop, daemon)
    record = first.submit(RunCreate(image=BASE, command=["true"]), created_by="x")
    on_loop(loop, first.shutdown(), 30)
    # As a crash leaves it: the record running, no `done` in the log.
    record.status = RunStatus.RUNNING
    store.save(record)
    path = settings.events_file(record.id)
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rindex(b"id: ")])

    def write(fd: int, data: Any) -> int:
        raise enospc()

    monkeypatch.setattr(eventlog_module, "_write", write)
    second = Runner(settings, store, RunFeed(boot="b"), loop, daemon)
    try:
        assert second.recover() == [record.id]
        # (taken up on its engine when its log says it got past its pull)
        wait_until(lambda: record.id not in second._active, "recovery to end it")
        recovered = second.get(record.id)
        assert recovered.status == RunStatus.ERROR and recovered.error is not None
        assert recovered.error.phase == "interrupted"
    finally:
        on_loop(loop, second.shutdown(), 30)
        store.close()


def test_reserve_says_when_the_filesystem_cannot_preallocate_and_when_it_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = {"errno": errno.EOPNOTSUPP}

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(answer["errno"])
        return -1

    monkeypatch.setattr(space_module, "_fallocate", fallocate)
    with open(tmp_path / "f", "wb") as f:
        assert space_module.reserve(f.fileno(), 0, RESERVE) is False  # go on without
        answer["errno"] = errno.ENOSPC
        with pytest.raises(OSError) as full:
            space_module.reserve(f.fileno(), 0, RESERVE)
        assert space_module.is_disk_full(full.value)
    monkeypatch.setattr(space_module, "_fallocate", None)  # no such call here (not Linux)
    with open(tmp_path / "f", "wb") as f:
        assert space_module.reserve(f.fileno(), 0, RESERVE) is False
