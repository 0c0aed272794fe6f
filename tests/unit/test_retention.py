"""Retention with the in-memory engine: by age (PULLRUN_RETENTION_DAYS) and by
disk use (PULLRUN_MAX_DISK_BYTES), oldest finished runs first, never an active
one; each deletion removes record, log and container, and is announced."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from backend.engines.fake import FakeDocker, Program, stdout
from backend.models import RunRecord
from backend.runs.runner import Runner
from backend.settings import Settings
from backend.storage.retention import SWEEP_INTERVAL, sweep_interval
from backend.storage.space import DataDirSpace
from tests.unit.conftest import MakeRunner, wait_until
from tests.unit.test_runner import ended, feed_events, hanging, running, submit


def printing(daemon: FakeDocker, size: int, name: str = "print") -> list[str]:
    """A command whose container prints `size` bytes of text and exits."""
    command = [name, str(size)]
    line = b"x" * 99 + b"\n"
    daemon.program(command, Program(output=[stdout(line * (size // 100))]))
    return command


def finished_run(runner: Runner, **body: object) -> RunRecord:
    return ended(runner, submit(runner, **body).id)


def gone(runner: Runner, run_id: str) -> bool:
    return runner.store.get(run_id) is None and not runner.settings.events_file(run_id).exists()


def event_files_total(settings: Settings) -> int:
    return sum(p.stat().st_size for p in settings.events_dir.iterdir())


def deleted_on_feed(runner: Runner, loop: asyncio.AbstractEventLoop) -> list[bytes]:
    return [raw for raw in feed_events(runner, loop) if b"event: deleted" in raw]


# -- by age ----------------------------------------------------------------------------------


def test_runs_that_finished_before_the_retention_period_are_deleted_with_their_container(
    make_runner: MakeRunner,
    daemon: FakeDocker,
    loop: asyncio.AbstractEventLoop,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make_runner(retention_days=1)
    old = [finished_run(runner, auto_remove=False), finished_run(runner)]
    assert runner.retention.sweep() == []  # a day has not passed
    assert all(runner.store.get(r.id) for r in old)

    command, gate = hanging(daemon, "busy")
    active = submit(runner, command=command)
    running(runner, active.id)

    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    runner.retention.now = lambda: later
    with caplog.at_level(logging.INFO, logger="backend.runs.runner"):
        runner.retention.sweep()
        wait_until(lambda: all(gone(runner, r.id) for r in old), "the old runs to be deleted")
    kept_container = old[0].container_id
    assert kept_container is not None
    assert kept_container not in [c.id for c in daemon.live_containers()]
    assert kept_container in [call.args[0] for call in daemon.calls_of("remove")]
    # The active run is old enough too, but never deleted while active.
    assert runner.get(active.id).status.value == "running"
    assert runner.settings.events_file(active.id).exists()
    wait_until(lambda: len(deleted_on_feed(runner, loop)) == 2, "two `deleted` on the feed")
    logged = [m for m in caplog.messages if m.startswith("retention deleted run ")]
    assert sorted(m.split()[3].rstrip(":") for m in logged) == sorted(r.id for r in old)
    assert all("PULLRUN_RETENTION_DAYS" in m for m in logged)

    gate.release()  # once it has ended, the sweep that follows its end takes it
    wait_until(lambda: gone(runner, active.id), "the run to go once it has ended")


def test_age_counts_from_the_end_of_a_run_not_its_start(make_runner: MakeRunner) -> None:
    runner = make_runner(retention_days=1)
    record = finished_run(runner)
    # Created two days ago, finished an hour ago: kept.
    stored = runner.store.get(record.id)
    assert stored is not None
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    stored.finished_at = hour_ago.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    runner.store.save(stored)
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="milliseconds")
    with runner.store._lock:
        runner.store._db.execute(
            "UPDATE runs SET created_at = ? WHERE id = ?",
            (two_days_ago.replace("+00:00", "Z"), record.id),
        )
    assert runner.retention.sweep() == []
    runner.retention.now = lambda: hour_ago + timedelta(days=1, seconds=1)
    assert runner.retention.sweep() == [record.id]


def test_zero_days_keeps_runs_at_any_age(make_runner: MakeRunner) -> None:
    runner = make_runner(retention_days=0)
    record = finished_run(runner)
    runner.retention.now = lambda: datetime.now(UTC) + timedelta(days=3650)
    assert runner.retention.sweep() == []
    assert runner.store.get(record.id) is not None


def test_the_sweep_interval_is_a_minute_or_a_tenth_of_a_short_period() -> None:
    assert sweep_interval(Settings(retention_days=0)) == SWEEP_INTERVAL
    assert sweep_interval(Settings(retention_days=30)) == SWEEP_INTERVAL
    assert sweep_interval(Settings(retention_days=0.001)) == pytest.approx(8.64)
    assert sweep_interval(Settings(retention_days=0.000001)) == 1.0


# -- by disk use -----------------------------------------------------------------------------


def test_over_max_disk_bytes_the_oldest_finished_runs_go_until_it_fits(
    make_runner: MakeRunner, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    runner = make_runner(max_disk_bytes=0)  # no limit while the runs are made
    big = printing(daemon, 50_000)
    first, second, third = (finished_run(runner, command=big) for _ in range(3))
    used = runner.space.used()
    log_size = runner.settings.events_file(first.id).stat().st_size
    assert log_size > 50_000

    # Room for all but one log: the oldest goes, and only it.
    runner.settings.max_disk_bytes = used - log_size // 2
    assert runner.retention.sweep() == [first.id]
    assert gone(runner, first.id)
    assert runner.store.get(second.id) and runner.store.get(third.id)
    assert runner.space.used() <= runner.settings.max_disk_bytes
    wait_until(lambda: deleted_on_feed(runner, loop), "the feed to announce the deletion")
    assert first.id.encode() in deleted_on_feed(runner, loop)[0]


def test_an_active_run_is_never_deleted_to_make_room(
    make_runner: MakeRunner, daemon: FakeDocker, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(max_disk_bytes=0)
    done = finished_run(runner, command=printing(daemon, 20_000))
    command, gate = hanging(daemon, "busy")
    active = submit(runner, command=command)
    running(runner, active.id)

    runner.settings.max_disk_bytes = 1  # nothing fits
    with caplog.at_level(logging.WARNING):
        deleted = runner.retention.sweep()
    assert done.id in deleted or gone(runner, done.id)
    assert active.id not in deleted
    assert runner.settings.events_file(active.id).exists()
    assert runner.get(active.id).status.value == "running"
    assert any("no finished run is left to delete" in m for m in caplog.messages)
    gate.release()  # once it has ended, the sweep that follows its end takes it
    wait_until(lambda: gone(runner, active.id), "the run to go once it has ended")


def test_each_deletion_by_retention_is_reported_to_on_expire_with_why(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_disk_bytes=0)
    first, second = (finished_run(runner, command=printing(daemon, 20_000)) for _ in range(2))
    kept = finished_run(runner)
    runner.delete(kept.id)  # a deletion by request: the API audits it, not the hook
    reported: list[tuple[str, str]] = []

    def on_expire(run_id: str, why: str) -> None:
        reported.append((run_id, why))
        raise RuntimeError("the audit store is gone")  # must not stop the sweep

    runner.on_expire = on_expire
    runner.settings.max_disk_bytes = 1  # nothing fits
    runner.retention.sweep()
    assert gone(runner, first.id) and gone(runner, second.id)
    assert [run_id for run_id, _ in reported] == [first.id, second.id]
    assert all("PULLRUN_MAX_DISK_BYTES" in why for _, why in reported)
    assert runner.retention.sweep() == [] and len(reported) == 2  # gone: not reported again


def test_a_sweep_follows_the_end_of_each_run(make_runner: MakeRunner, daemon: FakeDocker) -> None:
    runner = make_runner(max_disk_bytes=0)
    big = printing(daemon, 400_000)  # far more than the database grows per run
    first = finished_run(runner, command=big)
    # From now on there is room for about one more such log, not two.
    size = runner.settings.events_file(first.id).stat().st_size
    runner.settings.max_disk_bytes = runner.space.used() + size // 2
    sweeps = runner.retention.sweeps
    second = finished_run(runner, command=big)
    wait_until(lambda: gone(runner, first.id), "the sweep after the second run's end")
    wait_until(lambda: runner.retention.sweeps > sweeps, "that sweep to complete")
    assert runner.store.get(second.id) is not None


# -- the running total -----------------------------------------------------------------------


def test_the_running_total_matches_the_files_through_runs_deletes_and_a_restart(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner()
    command = printing(daemon, 10_000)
    runs = [finished_run(runner, command=command) for _ in range(3)]
    assert runner.space.events_bytes == event_files_total(runner.settings) > 30_000
    runner.delete(runs[0].id)
    assert runner.space.events_bytes == event_files_total(runner.settings)
    # A new start counts the folder once.
    again = DataDirSpace(runner.settings.data_dir, runner.settings.min_free_bytes)
    again.prepare()
    assert again.events_bytes == event_files_total(runner.settings)
    # used(): the logs plus the databases beside them.
    (runner.settings.data_dir / "notes.txt").write_bytes(b"x" * 1000)  # not pullrun's
    databases = [p for p in runner.settings.data_dir.glob("*.db*") if p.is_file()]
    assert {p.name for p in databases} >= {"pullrun.db", "pullrun.db-wal"}
    beside = sum(p.stat().st_size for p in databases)
    assert again.used() == again.events_bytes + beside


def test_used_is_the_counted_logs_without_walking_them(
    make_runner: MakeRunner, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner()
    finished_run(runner, command=printing(daemon, 5_000))
    assert runner.space.events_bytes > 0  # (waits for the count at start: its own walk)
    walked: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        walked.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    runner.space.used()
    assert walked == [os.fspath(runner.settings.data_dir)]
