"""Re-attach of a swarm run after a restart (`SwarmRun.resume`, runs/swarm.py),
against an in-memory cluster: one service per run, its task (state, time of
its state, exit code) and its log, read from the first line, followed or
not, and left open after the task ended (as the manager does).

The run's log before the kill is what a real `OutputRelay` made of the task's
first output (tests/unit/test_reattach.py, `record_before_crash`). What must
hold, as on a single engine: every line exactly once per stream, in order,
contiguous event ids, the right end, the timeout counted from the task's
start, and the service removed at the end.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from backend.engines import EngineConfig
from backend.engines.fake import stderr, stdout
from backend.engines.frames import FrameDecoder
from backend.engines.pool import EnginePool
from backend.engines.swarm import SwarmEngine
from backend.events import now_rfc3339
from backend.models import RunRecord, RunSpec, RunStatus
from backend.runs.reattach import ReattachPipeline, Recorded
from backend.runs.runner import Runner, links_for, new_run_id
from backend.settings import Settings
from backend.storage.eventlog import EventLog, RunFeed
from backend.storage.reader import Event
from backend.storage.store import RunStore
from tests.unit.conftest import BASE, assert_ended, events_of, on_loop, wait_until
from tests.unit.test_reattach import FLUSHED, lines_by_stream, notices, record_before_crash

ENGINE = "cluster"
LONG_AGO = "2000-01-01T00:00:00.000000000Z"
STATUSES = ("queued", "pulling", "starting", "running")


# -- the cluster ---------------------------------------------------------------------------------


@dataclass
class Service:
    id: str
    run_id: str
    task: dict[str, Any]
    log: bytearray = field(default_factory=bytearray)
    removed: bool = False


class Cluster:
    """A swarm manager's view of pullrun's services; also the engine factory."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.services: dict[str, Service] = {}
        self.log_reads: list[bool] = []  # `follow` of each task_logs call
        self.removed: list[str] = []

    def __call__(self) -> FakeSwarm:
        return FakeSwarm(self)

    def add(self, run_id: str, state: str, output: Sequence[bytes] = (), at: str = "") -> Service:
        number = len(self.services) + 1
        service = Service(
            id=f"service{number}",
            run_id=run_id,
            task={"ID": f"task{number}", "CreatedAt": now_rfc3339(), "NodeID": "node1"},
        )
        self.services[service.id] = service
        self.set(service, state, at=at)
        self.print(service, *output)
        return service

    def set(self, service: Service, state: str, *, exit_code: int = 0, at: str = "") -> None:
        """The task goes to `state` (at `at`: now by default)."""
        with self.cond:
            service.task["Status"] = {
                "State": state,
                "Timestamp": at or now_rfc3339(),
                "Message": state,
                "ContainerStatus": {"ContainerID": "c1", "ExitCode": exit_code},
            }
            self.cond.notify_all()

    def print(self, service: Service, *chunks: bytes) -> None:
        with self.cond:
            for chunk in chunks:
                service.log += chunk
            self.cond.notify_all()

    def following(self) -> int:
        with self.cond:
            return sum(self.log_reads)


class TaskLog:
    """A task's log from its first line: to its end, or followed (never ending
    by itself, as the manager's stream does not once the task ended)."""

    def __init__(self, cluster: Cluster, service: Service, follow: bool) -> None:
        self._cluster = cluster
        self._service = service
        self._follow = follow
        self._at = 0
        self._closed = False

    def read(self, timeout: float | None) -> bytes | None:
        end = None if timeout is None else time.monotonic() + timeout
        with self._cluster.cond:
            while True:
                log = self._service.log
                if self._closed:
                    return b""
                if self._at < len(log):
                    data, self._at = bytes(log[self._at :]), len(log)
                    return data
                if not self._follow or self._service.removed:
                    return b""
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cluster.cond.wait(left)

    def close(self) -> None:
        with self._cluster.cond:
            self._closed = True
            self._cluster.cond.notify_all()


class FakeSwarm(SwarmEngine):
    """The calls of a swarm engine the re-attach makes, on a `Cluster`."""

    def __init__(self, cluster: Cluster) -> None:  # (no client: nothing to reach)
        self.cluster = cluster

    def close(self) -> None:
        pass

    def version(self) -> dict[str, Any]:
        return {"Version": "fake", "Os": "linux", "Arch": "x86_64"}

    def info(self) -> dict[str, Any]:
        return {"NCPU": 2}

    def nodes(self) -> list[dict[str, Any]]:
        return []

    def node_name(self, node_id: str) -> str | None:
        return f"{node_id}-name"

    def managed_services(self, run_id: str | None = None) -> list[str]:
        with self.cluster.cond:
            return [s.id for s in self.cluster.services.values() if s.run_id == run_id]

    def tasks(self, service_id: str) -> list[dict[str, Any]]:
        with self.cluster.cond:
            service = self.cluster.services.get(service_id)
            return [copy.deepcopy(service.task)] if service is not None else []

    def task_logs(self, task_id: str, *, follow: bool) -> Any:
        with self.cluster.cond:
            self.cluster.log_reads.append(follow)
            service = next(s for s in self.cluster.services.values() if s.task["ID"] == task_id)
            return TaskLog(self.cluster, service, follow)

    def remove_service(self, service_id: str) -> None:
        with self.cluster.cond:
            service = self.cluster.services.pop(service_id, None)
            if service is not None:
                service.removed = True
                self.cluster.removed.append(service_id)
            self.cluster.cond.notify_all()

    def remove(self, container_id: str) -> None:
        pass  # (auto_remove: on a swarm, the removal of the service did it)


# -- a run the restart caught ---------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    yield made
    with made.cond:  # nothing stays blocked on a followed log
        for service in made.services.values():
            service.removed = True
        made.cond.notify_all()


@dataclass
class Caught:
    pipeline: ReattachPipeline
    service: Service | None
    last_event_id: int

    @property
    def record(self) -> RunRecord:
        return self.pipeline.record


def caught(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    cluster: Cluster,
    *,
    status: str = "running",
    printed: Sequence[bytes] = (),
    state: str | None = "running",
    at: str = "",
    started_at: str | None = None,
    **spec: Any,
) -> Caught:
    """A swarm run a killed server left `status`, having recorded `printed`
    (the task's first output); its service's task is in `state` (none: no
    service) and its log has `printed`."""
    settings.events_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    last = record_before_crash(
        settings.model_copy(update={"partial_line_delay": FLUSHED}),
        loop,
        run_id,
        printed,
        tty=bool(spec.get("tty")),
        statuses=STATUSES[: STATUSES.index(status) + 1],
    )
    service = cluster.add(run_id, state, printed, at) if state is not None else None
    record = RunRecord(
        id=run_id,
        status=RunStatus(status),
        spec=RunSpec(image=BASE, command=["print"], **spec),
        engine=ENGINE,
        node="node1-name" if status != "queued" else None,  # (saved with `pulling`)
        container_id=service.id if service is not None else "service-gone",
        created_at=now_rfc3339(),
        started_at=started_at if started_at else (now_rfc3339() if status == "running" else None),
        links=links_for(run_id),
        last_event_id=last,
    )
    path = settings.events_file(run_id)
    pipeline = ReattachPipeline(
        record, EventLog.load(path, loop), settings, Recorded.read(path, status)
    )
    pipeline.assign(ENGINE, cluster, EngineConfig(name=ENGINE, kind="swarm"))
    return Caught(pipeline, service, last)


def executed(run: Caught) -> threading.Thread:
    thread = threading.Thread(target=run.pipeline.execute, daemon=True)
    thread.start()
    return thread


def ended(settings: Settings, run: Caught, thread: threading.Thread | None = None) -> list[Event]:
    if thread is None:
        run.pipeline.execute()
    else:
        wait_until(lambda: not thread.is_alive(), f"run {run.record.id} to end")
    assert_ended(settings, run.record)
    return events_of(settings, run.record.id)


def frames_lines(output: bytes) -> dict[str, list[str]]:
    """The lines of each stream of multiplexed output (all of them ended)."""
    data: dict[str, bytes] = {}
    for stream, payload in FrameDecoder().feed(output):
        name = "stderr" if stream == 2 else "stdout"
        data[name] = data.get(name, b"") + payload
    return {name: raw.decode().split("\n")[:-1] for name, raw in data.items()}


def statuses(events: list[Event]) -> list[str]:
    return [e.data["status"] for e in events if e.type == "status"]


# -- the task runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "while_down", "after", "tty"),
    [
        ([stdout(b"one\ntw"), stderr(b"err 1\n")], [stdout(b"o\nthree\n")], [stderr(b"e2\n")], 0),
        ([], [stdout(b"a\n"), stderr(b"b\n")], [stdout(b"c\n")], 0),
        ([stdout(b"a\n"), stderr(b"b\n")], [], [], 0),
        ([b"one\r\nprompt: "], [b"yes\r\n"], [b"three"], 1),
    ],
)
def test_a_running_task_is_followed_again_with_every_line_once(
    settings: Settings,
    loop: asyncio.AbstractEventLoop,
    cluster: Cluster,
    printed: list[bytes],
    while_down: list[bytes],
    after: list[bytes],
    tty: int,
) -> None:
    run = caught(settings, loop, cluster, printed=printed, tty=bool(tty))
    assert run.service is not None
    cluster.print(run.service, *while_down)
    thread = executed(run)
    wait_until(lambda: cluster.following() == 1, "the log to be followed")
    cluster.print(run.service, *after)
    cluster.set(run.service, "failed", exit_code=3)
    events = ended(settings, run, thread)
    assert (run.record.status, run.record.exit_code) == (RunStatus.FAILED, 3)
    output = b"".join([*printed, *while_down, *after])
    expected = {"tty": ["one", "prompt: yes", "three"]} if tty else frames_lines(output)
    assert lines_by_stream(events) == expected
    assert events[run.last_event_id].type == "notice"  # the next id, no gap
    assert notices(events) == ["pullrun restarted: re-attached to its task"]
    assert statuses(events) == list(STATUSES)  # nothing entered twice
    assert run.record.log_lines == sum(len(v) for v in expected.values())
    assert cluster.log_reads == [False, True]  # counted once, then one stream followed
    assert cluster.removed == [run.service.id]


def test_a_task_that_ended_meanwhile_has_its_lines_and_exit_recorded(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    printed = [stdout(b"a\n")]
    run = caught(settings, loop, cluster, printed=printed)
    assert run.service is not None
    cluster.print(run.service, stdout(b"b\n"), stderr(b"dying\n"))
    cluster.set(run.service, "failed", exit_code=7)
    events = ended(settings, run)
    assert (run.record.status, run.record.exit_code) == (RunStatus.FAILED, 7)
    assert lines_by_stream(events) == {"stdout": ["a", "b"], "stderr": ["dying"]}
    assert notices(events) == ["pullrun restarted: its task ended meanwhile"]
    assert cluster.log_reads == [False, False]  # read to its end twice, never followed
    assert cluster.removed == [run.service.id]


def test_a_task_that_ran_past_its_timeout_while_the_server_was_down_timed_out(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    run = caught(settings, loop, cluster, started_at=LONG_AGO, timeout=60)
    assert run.service is not None
    cluster.print(run.service, stdout(b"done\n"))
    cluster.set(run.service, "complete", at="2000-01-01T00:02:00Z")
    events = ended(settings, run)
    assert (run.record.status, run.record.exit_code) == (RunStatus.TIMED_OUT, 0)
    assert run.record.durations.run == 120
    assert lines_by_stream(events) == {"stdout": ["done"]}
    assert notices(events)[-1] == (
        "timeout of 60s passed while pullrun was down: the task ran 120.0s and ended by itself"
    )


def test_the_timeout_counts_from_the_start_of_the_running_task(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    """Running since long ago (the time of its `running` state), its 60 s are
    gone: its log is caught up to its end, then its service is removed."""
    run = caught(settings, loop, cluster, printed=[stdout(b"a\n")], at=LONG_AGO, timeout=60)
    assert run.service is not None
    cluster.print(run.service, stdout(b"b\n"))
    events = ended(settings, run)
    assert run.record.status == RunStatus.TIMED_OUT
    assert lines_by_stream(events) == {"stdout": ["a", "b"]}
    assert notices(events) == [
        "pullrun restarted: re-attached to its task",
        "timeout of 60s reached: stopping its service",
    ]
    assert cluster.log_reads == [False, False]  # not followed: the removal would cut it
    assert cluster.removed == [run.service.id]


def test_a_task_still_preparing_is_followed_through_its_states(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    run = caught(settings, loop, cluster, status="pulling", state="preparing")
    assert run.service is not None
    thread = executed(run)
    wait_until(
        lambda: (
            "pullrun restarted: following its task again"
            in notices(events_of(settings, run.record.id))
        ),
        "the task to be followed again",
    )
    cluster.set(run.service, "running")
    wait_until(lambda: cluster.following() == 1, "the log to be followed")
    cluster.print(run.service, stdout(b"hello\n"))
    cluster.set(run.service, "complete")
    events = ended(settings, run, thread)
    assert run.record.status == RunStatus.SUCCEEDED
    assert statuses(events) == list(STATUSES)  # `pulling` once, then on
    assert lines_by_stream(events) == {"stdout": ["hello"]}
    assert cluster.removed == [run.service.id]


def test_a_queued_task_rejected_meanwhile_ends_with_the_clusters_message(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    run = caught(settings, loop, cluster, status="queued", state="rejected")
    assert run.service is not None
    run.service.task["Status"]["Err"] = "No such image: nope"
    ended(settings, run)
    assert run.record.status == RunStatus.ERROR and run.record.error is not None
    # The node it was given failed its pull: the phase is the pull's (the task says so).
    assert (run.record.error.phase, run.record.error.message) == ("pull", "No such image: nope")
    assert cluster.removed == [run.service.id]


def test_a_run_whose_service_is_gone_is_interrupted(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    run = caught(settings, loop, cluster, status="starting", state=None)
    ended(settings, run)
    assert run.record.status == RunStatus.ERROR and run.record.error is not None
    assert (run.record.error.phase, run.record.error.message) == (
        "interrupted",
        "the server stopped while this run was starting, and its service is gone",
    )


def test_the_service_is_found_by_its_label(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    """The record does not name it (its save was cut): the label does."""
    run = caught(settings, loop, cluster, status="queued", state="running")
    assert run.service is not None
    run.record.container_id = None
    cluster.set(run.service, "complete")
    ended(settings, run)
    assert run.record.status == RunStatus.SUCCEEDED
    assert run.record.container_id == run.service.id


def test_cancel_removes_the_service_of_a_re_attached_run(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    run = caught(settings, loop, cluster, printed=[stdout(b"a\n")])
    assert run.service is not None
    thread = executed(run)
    wait_until(lambda: cluster.following() == 1, "the log to be followed")
    run.pipeline.cancel("canceled by request")
    ended(settings, run, thread)
    assert run.record.status == RunStatus.CANCELED
    assert run.record.error is not None and run.record.error.phase == "run"
    assert cluster.removed == [run.service.id]


# -- recovery -------------------------------------------------------------------------------------


def test_recovery_takes_up_a_swarm_run_whatever_its_phase_once_its_service_exists(
    settings: Settings, loop: asyncio.AbstractEventLoop, cluster: Cluster
) -> None:
    """Queued or pulling, a swarm run has its service (its task waits for a
    node, or the node pulls): taken up, not queued again nor interrupted."""
    runs = {
        status: caught(settings, loop, cluster, status=status, state="running")
        for status in ("queued", "pulling")
    }
    store = RunStore(settings.db_path)
    for run in runs.values():
        store.insert(run.record)
    config = EngineConfig(name=ENGINE, kind="swarm")
    pool = EnginePool([(config, cluster, cluster)], interval=3600)
    runner = Runner(settings, store, RunFeed(boot="test"), loop, pool)
    try:
        assert sorted(runner.recover()) == sorted(r.record.id for r in runs.values())
        wait_until(lambda: cluster.following() == 2, "both logs to be followed")
        for run in runs.values():
            assert run.service is not None
            cluster.print(run.service, stdout(b"out\n"))
            cluster.set(run.service, "complete")
        for run in runs.values():
            wait_until(lambda r=run: r.record.id not in runner._active, "the run to end")
            record = store.get(run.record.id)
            assert record is not None and record.status == RunStatus.SUCCEEDED, record
            assert_ended(settings, record)
            assert lines_by_stream(events_of(settings, record.id)) == {"stdout": ["out"]}
        assert sorted(cluster.removed) == sorted(
            r.service.id for r in runs.values() if r.service is not None
        )
    finally:
        on_loop(loop, runner.shutdown(), 30)
        store.close()
