"""Runner with the in-memory engine: queue, workers, limits, cancel, delete,
shutdown and crash recovery; every accepted run ends with exactly one `done`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backend.engines.fake import FakeDocker, Gate, Program, stdout
from backend.errors import Conflict, NotFound, QueueFull, ShuttingDown
from backend.events import EventType, now_rfc3339
from backend.models import Phase, RunCreate, RunRecord, RunSpec, RunStatus
from backend.runs.pipeline import RunPipeline
from backend.runs.runner import CANCEL_REASON, SHUTDOWN_REASON, Runner, links_for
from backend.settings import Settings
from backend.storage.eventlog import EventLog, RunFeed
from backend.storage.store import RunStore
from tests.unit.conftest import (
    BASE,
    MakeRunner,
    assert_ended,
    events_of,
    lines_of,
    on_loop,
    wait_until,
)


def submit(runner: Runner, created_by: str = "tester", **body: Any) -> RunRecord:
    body.setdefault("image", BASE)
    body.setdefault("command", ["true"])
    return runner.submit(RunCreate(**body), created_by=created_by)


def ended(runner: Runner, run_id: str) -> RunRecord:
    """Wait until the run has ended and its worker let go of it; the saved record,
    checked against its log."""
    wait_until(lambda: runner.get(run_id).status.terminal, f"run {run_id} to end")
    wait_until(lambda: run_id not in runner._active, f"the worker of run {run_id} to finish")
    record = runner.store.get(run_id)
    assert record is not None
    assert_ended(runner.settings, record)
    return record


def running(runner: Runner, run_id: str) -> RunRecord:
    return wait_until(
        lambda: (r := runner.get(run_id)).status == RunStatus.RUNNING and r,
        f"run {run_id} to be running",
    )


def hanging(daemon: FakeDocker, name: str) -> tuple[list[str], Gate]:
    """A command whose container prints `name` and runs until its gate opens (or a stop)."""
    gate = daemon.gate(name)
    command = ["hang", name]
    daemon.program(command, Program(output=[stdout(f"{name}\n".encode()), gate]))
    return command, gate


def created_runs(daemon: FakeDocker) -> list[str]:
    return [call.args[0] for call in daemon.calls_of("create")]


def feed_events(runner: Runner, loop: asyncio.AbstractEventLoop) -> list[bytes]:
    async def read() -> list[bytes]:
        return [raw for _, raw in runner.feed._events]

    return on_loop(loop, read())


# -- runs ------------------------------------------------------------------------------------


def test_a_run_is_accepted_at_once_and_ends_with_done(
    runner: Runner, loop: asyncio.AbstractEventLoop
) -> None:
    record = submit(runner, command=["true"], created_by="alice")
    # (the returned record is the live one: a worker may have moved it on already)
    assert runner.store.get(record.id) is not None
    assert record.created_by == "alice"
    assert events_of(runner.settings, record.id)[0].data["status"] == "queued"
    final = ended(runner, record.id)
    assert final.status == RunStatus.SUCCEEDED and final.created_by == "alice"
    assert runner.active == 0 and runner.queued == 0
    feed = wait_until(
        lambda: [raw for raw in feed_events(runner, loop) if b'"succeeded"' in raw],
        "the feed to announce the end",
    )
    assert record.id.encode() in feed[0]


def test_the_accepted_record_is_the_run_as_accepted(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_concurrent_runs=1)
    command, gate = hanging(daemon, "a")
    accepted = submit(runner, command=command)
    assert running(runner, accepted.id) is not accepted  # the live record moved on...
    assert accepted.status == RunStatus.QUEUED  # ...the answer to POST did not
    assert accepted.last_event_id == 1
    gate.release()
    assert ended(runner, accepted.id).status == RunStatus.SUCCEEDED
    assert accepted.status == RunStatus.QUEUED


def test_runs_wait_in_fifo_order_for_a_free_worker(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_concurrent_runs=2)
    first, first_gate = hanging(daemon, "a")
    second, second_gate = hanging(daemon, "b")
    a = submit(runner, command=first)
    b = submit(runner, command=second)
    running(runner, a.id)
    running(runner, b.id)
    later = [submit(runner) for _ in range(3)]
    assert (runner.active, runner.queued) == (5, 3)
    assert all(runner.get(r.id).status == RunStatus.QUEUED for r in later)
    assert created_runs(daemon) == [a.id, b.id] or created_runs(daemon) == [b.id, a.id]
    second_gate.release()
    for r in later:
        ended(runner, r.id)
    assert created_runs(daemon)[2:] == [r.id for r in later]
    assert runner.get(a.id).status == RunStatus.RUNNING  # one worker was enough for the rest
    first_gate.release()
    assert ended(runner, a.id).status == RunStatus.SUCCEEDED


def test_one_worker_runs_one_at_a_time(make_runner: MakeRunner, daemon: FakeDocker) -> None:
    runner = make_runner(max_concurrent_runs=1)
    command, gate = hanging(daemon, "a")
    a = submit(runner, command=command)
    running(runner, a.id)
    b = submit(runner)
    c = submit(runner)
    assert created_runs(daemon) == [a.id]
    gate.release()
    for r in (a, b, c):
        assert ended(runner, r.id).status == RunStatus.SUCCEEDED
    assert created_runs(daemon) == [a.id, b.id, c.id]


def test_past_max_queued_runs_a_run_is_refused(make_runner: MakeRunner, daemon: FakeDocker) -> None:
    runner = make_runner(max_concurrent_runs=1, max_queued_runs=1)
    command, gate = hanging(daemon, "a")
    a = submit(runner, command=command)
    running(runner, a.id)
    b = submit(runner)
    with pytest.raises(QueueFull, match="1 runs are already queued"):
        submit(runner)
    runner.cancel(b.id)
    c = submit(runner)  # room again
    gate.release()
    for r in (a, c):
        assert ended(runner, r.id).status == RunStatus.SUCCEEDED
    assert ended(runner, b.id).status == RunStatus.CANCELED
    assert len(runner.store.page(None, None, 10)[0]) == 3  # the refused run left nothing


def test_with_no_queue_only_an_idle_worker_takes_a_run(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_concurrent_runs=1, max_queued_runs=0)
    command, gate = hanging(daemon, "a")
    a = submit(runner, command=command)  # the worker is idle: accepted
    with pytest.raises(QueueFull):
        submit(runner)
    gate.release()
    ended(runner, a.id)
    ended(runner, submit(runner).id)


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_of_a_queued_run_ends_it_at_once_and_it_never_starts(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_concurrent_runs=1)
    command, gate = hanging(daemon, "a")
    a = submit(runner, command=command)
    running(runner, a.id)
    b = submit(runner)
    canceled = runner.cancel(b.id)
    assert canceled.status == RunStatus.CANCELED  # before any worker is free
    assert canceled.error is not None
    assert (canceled.error.phase, canceled.error.message) == (Phase.QUEUE, CANCEL_REASON)
    assert runner.queued == 0
    ended(runner, b.id)
    gate.release()
    ended(runner, a.id)
    assert b.id not in created_runs(daemon)


def test_cancel_of_a_running_run_stops_its_container(runner: Runner, daemon: FakeDocker) -> None:
    command, gate = hanging(daemon, "a")
    a = submit(runner, command=command)
    gate.wait_reached()  # it has printed its line and waits
    runner.cancel(a.id)
    final = ended(runner, a.id)
    assert final.status == RunStatus.CANCELED
    assert final.error is not None and final.error.phase == Phase.RUN
    assert final.exit_code == 143
    assert lines_of(events_of(runner.settings, a.id)) == [("stdout", "a")]
    assert daemon.live_containers() == []


def test_cancel_of_an_unknown_or_finished_run_is_refused(runner: Runner) -> None:
    with pytest.raises(NotFound):
        runner.cancel("nosuchrun")
    done = submit(runner)
    ended(runner, done.id)
    with pytest.raises(Conflict, match="has already finished"):
        runner.cancel(done.id)


# -- delete ----------------------------------------------------------------------------------


def test_delete_refuses_an_active_run_and_removes_everything_of_a_finished_one(
    runner: Runner, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    command, gate = hanging(daemon, "a")
    active = submit(runner, command=command)
    running(runner, active.id)
    with pytest.raises(Conflict, match="still active"):
        runner.delete(active.id)
    gate.release()
    ended(runner, active.id)

    kept = ended(runner, submit(runner, auto_remove=False).id)
    assert kept.container_id is not None
    assert [c.id for c in daemon.live_containers()] == [kept.container_id]
    runner.events(kept.id)  # cached
    runner.delete(kept.id)
    assert daemon.live_containers() == []
    assert runner.store.get(kept.id) is None
    assert not runner.settings.events_file(kept.id).exists()
    for call in (runner.get, runner.events, runner.delete, runner.cancel):
        with pytest.raises(NotFound):
            call(kept.id)
    wait_until(
        lambda: any(b"event: deleted" in raw for raw in feed_events(runner, loop)),
        "the feed to announce the deletion",
    )


def test_delete_goes_on_when_the_engine_cannot_remove_the_container(
    runner: Runner, daemon: FakeDocker
) -> None:
    kept = ended(runner, submit(runner, auto_remove=False).id)
    daemon.fail("remove", "remove-in-progress")
    runner.delete(kept.id)
    assert runner.store.get(kept.id) is None


# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_cancels_every_run_each_ends_once_and_no_new_run_is_accepted(
    make_runner: MakeRunner, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    runner = make_runner(max_concurrent_runs=2)
    first, _ = hanging(daemon, "a")
    second, _ = hanging(daemon, "b")
    a = submit(runner, command=first)
    b = submit(runner, command=second)
    running(runner, a.id)
    running(runner, b.id)
    queued = [submit(runner), submit(runner)]
    on_loop(loop, runner.shutdown())
    for r in (a, b, *queued):
        final = ended(runner, r.id)
        assert final.status == RunStatus.CANCELED
        assert final.error is not None and final.error.message == SHUTDOWN_REASON
    assert runner.active == 0 and runner.queued == 0
    with pytest.raises(ShuttingDown):
        submit(runner)
    on_loop(loop, runner.shutdown())  # a second call returns once the first is done
    wait_until(lambda: not runner._dispatcher.is_alive(), "placement to stop")
    assert runner.feed.closed
    on_loop(loop, runner.wait_for_subscribers(1.0))


def test_shutdown_waits_no_longer_than_its_grace_for_a_stuck_run(
    make_runner: MakeRunner, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    runner = make_runner(shutdown_grace=0.01)
    command, _ = hanging(daemon, "a")
    removing = daemon.hold("remove")  # the engine never finishes removing its container
    a = submit(runner, command=command)
    running(runner, a.id)
    on_loop(loop, runner.shutdown())  # returns after the grace, the run still active
    assert a.id in runner._active
    removing.release()
    final = ended(runner, a.id)
    assert final.status == RunStatus.CANCELED


def test_shutdown_never_starts_a_queued_run(
    make_runner: MakeRunner,
    daemon: FakeDocker,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shutdown cancels runs one after the other. A worker freed by a canceled
    run must not take a queued run (and pull, create and start its container)
    before the shutdown gets to cancel it: the cancel of the first queued run is
    held here until the running runs have ended and a worker either took the
    queued run or stopped."""
    runner = make_runner(max_concurrent_runs=2)
    first, _ = hanging(daemon, "a")
    second, _ = hanging(daemon, "b")
    a = submit(runner, command=first)
    b = submit(runner, command=second)
    running(runner, a.id)
    running(runner, b.id)
    queued = [submit(runner), submit(runner)]
    real_cancel = Runner.cancel

    def cancel(self: Runner, run_id: str, reason: str = CANCEL_REASON) -> RunRecord:
        if run_id == queued[0].id:
            wait_until(
                lambda: a.id not in self._active and b.id not in self._active,
                "the canceled running runs to end",
            )
            wait_until(
                lambda: self._active[run_id].claimed or not self._dispatcher.is_alive(),
                "the queued run to be placed, or placement to stop",
            )
        return real_cancel(self, run_id, reason)

    monkeypatch.setattr(Runner, "cancel", cancel)
    on_loop(loop, runner.shutdown())
    phases = [(r.id, getattr(ended(runner, r.id).error, "phase", None)) for r in queued]
    assert phases == [(r.id, Phase.QUEUE) for r in queued]
    assert set(created_runs(daemon)) == {a.id, b.id}


# -- recovery --------------------------------------------------------------------------------


def stored_run(
    settings: Settings,
    store: RunStore,
    loop: asyncio.AbstractEventLoop,
    status: RunStatus,
    events: list[tuple[str, dict[str, Any]]],
) -> RunRecord:
    """A run as a crashed server left it: its record (saved with `status`) and its log."""
    run_id = f"crashed{len(store.page(None, None, 100)[0]):05d}"
    record = RunRecord(
        id=run_id,
        status=status,
        spec=RunSpec(image=BASE, command=["true"]),
        created_at=now_rfc3339(),
        links=links_for(run_id),
    )
    log = EventLog(settings.events_file(run_id), loop)
    for event_type, data in events:
        record.last_event_id = log.append(event_type, data)
    log.close()
    store.insert(record)
    return record


def test_recover_ends_the_runs_a_crash_left_unfinished(
    settings: Settings, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    settings.events_dir.mkdir(parents=True)
    store = RunStore(settings.db_path)
    at = {"at": now_rfc3339()}
    running_ = stored_run(
        settings,
        store,
        loop,
        RunStatus.RUNNING,
        [("status", {"status": s, **at}) for s in ("queued", "creating", "starting", "running")],
    )
    daemon.add_container(running_.id, running_.spec)
    done = {
        "status": "failed",
        "exit_code": 3,
        "oom_killed": False,
        "error": None,
        "durations": {},
        "log_lines": 0,
        "log_bytes": 0,
        "dropped_lines": 0,
        "dropped_bytes": 0,
    }
    ended_ = stored_run(
        settings,
        store,
        loop,
        RunStatus.RUNNING,
        [("status", {"status": "queued", **at}), ("done", done)],
    )
    torn = stored_run(
        settings, store, loop, RunStatus.PULLING, [("status", {"status": "queued", **at})]
    )
    with settings.events_file(torn.id).open("ab") as f:
        f.write(b'id: 2\nevent: pull\ndata: {"lay')  # the crash cut this write
    finished = stored_run(
        settings,
        store,
        loop,
        RunStatus.SUCCEEDED,
        [("status", {"status": "queued", **at}), ("done", {**done, "status": "succeeded"})],
    )
    store.close()

    store = RunStore(settings.db_path)
    runner = Runner(settings, store, RunFeed(boot="after"), loop, daemon)
    try:
        recovered = runner.recover()
        assert sorted(recovered) == sorted([running_.id, ended_.id, torn.id])
        # Its container was created, never started: taken up on the engine
        # (runs/reattach.py), where its start turns out to have been cut.
        wait_until(lambda: running_.id not in runner._active, "recovery to end the running run")
        for run in (running_, torn):
            record = store.get(run.id)
            assert record is not None
            assert record.status == RunStatus.ERROR and record.error is not None
            assert record.error.phase == Phase.INTERRUPTED
            assert record.error.message == (
                f"the server stopped while this run was {run.status.value}"
            )
            assert_ended(settings, record)
        after = store.get(ended_.id)
        assert after is not None
        assert (after.status, after.exit_code, after.error) == (RunStatus.FAILED, 3, None)
        assert after.last_event_id == 2
        assert [e.type for e in events_of(settings, torn.id)] == ["status", "done"]
        assert store.get(finished.id) == finished
        wait_until(lambda: not daemon.live_containers(), "recovery to remove the container")
        assert runner.recover() == []
    finally:
        on_loop(loop, runner.shutdown())
        store.close()


def test_recovery_cleanup_survives_an_engine_that_is_down(
    settings: Settings, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    settings.events_dir.mkdir(parents=True)
    store = RunStore(settings.db_path)
    stored_run(settings, store, loop, RunStatus.RUNNING, [("status", {"status": "queued"})])
    daemon.down = True
    runner = Runner(settings, store, RunFeed(boot="after"), loop, daemon)
    try:
        assert len(runner.recover()) == 1
    finally:
        on_loop(loop, runner.shutdown())
        store.close()


# -- robustness and the promise of `done` ------------------------------------------------------


def test_a_worker_survives_an_unexpected_failure_and_the_run_still_ends(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(max_concurrent_runs=1)
    real = RunPipeline.execute
    broken: list[str] = []

    def execute(self: RunPipeline) -> None:
        if not broken:
            broken.append(self.record.id)
            raise RuntimeError("a bug")
        real(self)

    monkeypatch.setattr(RunPipeline, "execute", execute)
    first = ended(runner, submit(runner).id)
    assert first.status == RunStatus.ERROR and first.error is not None
    assert first.error.message == "internal error: see the server log"
    assert ended(runner, submit(runner).id).status == RunStatus.SUCCEEDED


def test_queries_see_live_runs_and_stored_ones(runner: Runner, daemon: FakeDocker) -> None:
    command, gate = hanging(daemon, "a")
    live = submit(runner, command=command)
    running(runner, live.id)
    old = ended(runner, submit(runner).id)
    page, cursor = runner.page(None, None, 10)
    assert [r.id for r in page] == [old.id, live.id] and cursor is None
    assert page[1].status == RunStatus.RUNNING  # the live record, not the stored one
    assert runner.events(live.id).last_id >= 4
    assert runner.events(old.id).finished
    assert runner.events(old.id) is runner.events(old.id)  # cached
    with pytest.raises(NotFound):
        runner.get("nosuchrun")
    gate.release()
    ended(runner, live.id)


def test_every_accepted_run_ends_with_one_done_matching_its_record(
    make_runner: MakeRunner, daemon: FakeDocker
) -> None:
    runner = make_runner(max_concurrent_runs=3, max_queued_runs=50)
    daemon.program(["fail"], Program(exit_code=3))
    daemon.program(["oom"], Program(exit_code=137, oom_killed=True))
    daemon.program(["broken"], Program(start_error="start-no-such-command"))
    daemon.program(["talk"], Program(output=[stdout(b"a\nb\n")]))
    hang_command, _ = hanging(daemon, "forever")
    bodies: list[dict[str, Any]] = [
        {"command": ["true"]},
        {"command": ["fail"]},
        {"command": ["oom"]},
        {"command": ["broken"]},
        {"command": ["talk"], "auto_remove": False},
        {"image": "127.0.0.1:5000/nosuch:1"},
        {"image": "127.0.0.1:5000/nosuch:1", "pull": "never"},
        {"command": hang_command, "timeout": 0.001},
        {"command": hang_command},  # canceled below
    ] * 3
    records = [submit(runner, **body) for body in bodies]
    for index in range(8, len(records), 9):
        runner.cancel(records[index].id)
    expected = [
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.FAILED,
        RunStatus.ERROR,
        RunStatus.SUCCEEDED,
        RunStatus.ERROR,
        RunStatus.ERROR,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELED,
    ] * 3
    assert [ended(runner, r.id).status for r in records] == expected
    assert runner.active == 0
    stored = runner.store.page(None, None, 100)[0]
    assert len(stored) == len(records) and all(r.status.terminal for r in stored)
    for record in stored:
        events = events_of(runner.settings, record.id)
        assert [e.type for e in events].count(EventType.DONE) == 1
    assert daemon.engines_open == 0


def test_a_run_the_restart_caught_in_the_queue_is_queued_again(
    settings: Settings, daemon: FakeDocker, loop: asyncio.AbstractEventLoop
) -> None:
    settings.events_dir.mkdir(parents=True)
    store = RunStore(settings.db_path)
    at = {"at": now_rfc3339()}
    first, second = (
        stored_run(
            settings, store, loop, RunStatus.QUEUED, [("status", {"status": "queued", **at})]
        )
        for _ in range(2)
    )
    secret = stored_run(
        settings, store, loop, RunStatus.QUEUED, [("status", {"status": "queued", **at})]
    )
    secret.spec.secret_env = {"TOKEN": "***"}
    store.save(secret)
    store.close()

    store = RunStore(settings.db_path)
    one_at_a_time = settings.model_copy(update={"max_concurrent_runs": 1})
    runner = Runner(one_at_a_time, store, RunFeed(boot="after"), loop, daemon)
    try:
        assert runner.recover() == [first.id, second.id, secret.id]
        for run in (first, second):
            record = ended(runner, run.id)
            assert record.status == RunStatus.SUCCEEDED, record.error
            notices = [e.data["message"] for e in events_of(settings, run.id) if e.type == "notice"]
            assert notices == ["pullrun restarted: the run is queued again"]
        assert created_runs(daemon) == [first.id, second.id]
        record = ended(runner, secret.id)
        assert record.status == RunStatus.ERROR and record.error is not None
        assert record.error.phase == Phase.INTERRUPTED
        assert "secret_env are never kept" in record.error.message
    finally:
        on_loop(loop, runner.shutdown())
        store.close()
