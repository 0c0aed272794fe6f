"""Placement over many engines (fake daemons): pins, labels, platform, the
image preference, free slots, round robin, the queue spilling over, faults,
engines coming back, the placement timeout and `engine` feed events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from backend.engines import EngineConfig
from backend.engines.fake import FakeDocker, Gate, Program, stdout
from backend.engines.pool import EnginePool
from backend.errors import PolicyViolation
from backend.models import Phase, RunCreate, RunRecord, RunStatus
from backend.runs.runner import Runner
from backend.settings import Settings
from backend.storage.eventlog import RunFeed
from backend.storage.store import RunStore
from tests.unit.conftest import BASE, assert_ended, events_of, on_loop, wait_until

OTHER = "127.0.0.1:5000/pullrun/other:latest"


class Gates:
    """One gate per daemon (a gate belongs to its daemon), released together."""

    def __init__(self, gates: list[Gate]) -> None:
        self.gates = gates

    def release(self) -> None:
        for gate in self.gates:
            gate.release()


class Cluster:
    def __init__(self, runner: Runner, daemons: dict[str, FakeDocker]) -> None:
        self.runner = runner
        self.daemons = daemons

    def submit(self, **body: Any) -> RunRecord:
        body.setdefault("image", BASE)
        body.setdefault("command", ["true"])
        return self.runner.submit(RunCreate(**body), created_by="tester")

    def ended(self, run_id: str) -> RunRecord:
        wait_until(lambda: self.runner.get(run_id).status.terminal, f"run {run_id} to end")
        wait_until(lambda: run_id not in self.runner._active, f"run {run_id} to let go")
        record = self.runner.store.get(run_id)
        assert record is not None
        assert_ended(self.runner.settings, record)
        return record

    def running(self, run_id: str) -> RunRecord:
        return wait_until(
            lambda: (r := self.runner.get(run_id)).status == RunStatus.RUNNING and r,
            f"run {run_id} to be running",
        )

    def hanging(self, name: str) -> tuple[list[str], Gates]:
        """A command that prints `name` and runs until released, on every engine."""
        command = ["hang", name]
        gates = Gates([daemon.gate(name) for daemon in self.daemons.values()])
        for daemon, gate in zip(self.daemons.values(), gates.gates, strict=True):
            daemon.program(command, Program(output=[stdout(f"{name}\n".encode()), gate]))
        return command, gates

    def created_on(self, engine: str) -> list[str]:
        return [call.args[0] for call in self.daemons[engine].calls_of("create")]


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(settings: Settings, loop: asyncio.AbstractEventLoop) -> Iterator[MakeCluster]:
    made: list[tuple[Runner, RunStore, list[FakeDocker]]] = []

    def make(
        engines: dict[str, dict[str, Any]],
        *,
        interval: float = 0.05,
        **overrides: Any,
    ) -> Cluster:
        """`engines`: name -> EngineConfig fields, plus `images`, `down`,
        `version` and `info` (overrides of the recorded answers) for its daemon."""
        run_settings = settings.model_copy(update=overrides) if overrides else settings
        daemons: dict[str, FakeDocker] = {}
        parts = []
        for name, fields in engines.items():
            fields = dict(fields)
            daemon = FakeDocker(images=fields.pop("images", [BASE]))
            daemon.down = fields.pop("down", False)
            daemon.version_overrides = fields.pop("version", {})
            daemon.info_overrides = fields.pop("info", {})
            daemons[name] = daemon
            parts.append((EngineConfig(name=name, **fields), daemon, daemon.probe))
        pool = EnginePool(parts, interval=interval)
        store = RunStore(run_settings.db_path)
        runner = Runner(run_settings, store, RunFeed(boot="test"), loop, pool)
        made.append((runner, store, list(daemons.values())))
        return Cluster(runner, daemons)

    try:
        yield make
    finally:
        for runner, store, daemons in made:
            for daemon in daemons:
                daemon.down = False
                daemon.close()
            on_loop(loop, runner.shutdown(), 30)
            store.close()


def two(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    engines: dict[str, dict[str, Any]] = {
        "a": {"max_concurrent_runs": 2, "labels": {"zone": "a"}},
        "b": {"max_concurrent_runs": 2, "labels": {"zone": "b", "gpu": "true"}},
    }
    for name, fields in extra.items():
        engines[name] = {**engines.get(name, {}), **fields}
    return engines


def test_a_run_pinned_to_an_engine_runs_there_and_says_so(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two())
    for name in ("a", "b", "b"):
        record = cluster.ended(cluster.submit(engine=name).id)
        assert record.status == RunStatus.SUCCEEDED
        assert record.engine == name
        assert record.id in cluster.created_on(name)
        leaving = [e for e in events_of(cluster.runner.settings, record.id) if e.type == "status"]
        assert leaving[0].data["status"] == "queued" and "engine" not in leaving[0].data
        assert leaving[1].data["engine"] == name


def test_labels_select_the_engines_that_have_them_all(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two())
    runs = [cluster.submit(engine_labels={"gpu": "true"}) for _ in range(3)]
    assert {cluster.ended(r.id).engine for r in runs} == {"b"}
    assert cluster.ended(cluster.submit(engine_labels={"zone": "a"}).id).engine == "a"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"engine": "c"}, "engine", "no engine named 'c' (engines: a, b)"),
        ({"engine_labels": {"gpu": "false"}}, "engine_labels", "no engine has all"),
        ({"engine": "a", "engine_labels": {"gpu": "true"}}, "engine_labels", "no engine"),
        ({"platform": "linux/arm64"}, "platform", "is linux/arm64 (they are linux/amd64)"),
        ({"platform": "windows"}, "platform", "no engine for this run is windows"),
        ({"cpus": 3, "engine": "a"}, "cpus", "has 3 CPUs (the most is 2)"),
    ],
)
def test_a_run_no_engine_could_ever_take_is_422_and_leaves_nothing(
    make_cluster: MakeCluster, body: dict[str, Any], field: str, words: str
) -> None:
    cluster = make_cluster(two(), max_cpus=64)
    with pytest.raises(PolicyViolation) as caught:
        cluster.submit(**body)
    assert caught.value.fields[0]["field"] == field
    assert words in caught.value.fields[0]["message"]
    assert cluster.runner.store.page(None, None, 10)[0] == []


def test_the_platform_picks_the_engine_of_that_architecture(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two(b={"version": {"Arch": "arm64"}}))
    runs = [cluster.submit(platform="linux/arm64") for _ in range(2)]
    assert {cluster.ended(r.id).engine for r in runs} == {"b"}
    assert cluster.ended(cluster.submit(platform="linux/amd64").id).engine == "a"
    assert cluster.ended(cluster.submit(platform="linux").id).status == RunStatus.SUCCEEDED


def test_an_engine_that_has_the_image_is_preferred_and_nothing_is_pulled(
    make_cluster: MakeCluster,
) -> None:
    # b has more free slots; only a has the image.
    cluster = make_cluster(two(a={"images": [BASE, OTHER]}, b={"max_concurrent_runs": 8}))
    runs = [cluster.ended(cluster.submit(image=OTHER).id) for _ in range(4)]
    assert {r.engine for r in runs} == {"a"}
    assert all(r.pull is not None and r.pull["pulled"] is False for r in runs)
    assert cluster.daemons["a"].calls_of("pull") == cluster.daemons["b"].calls_of("pull") == []


def test_equal_engines_take_runs_in_turn(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two())
    engines = [cluster.ended(cluster.submit().id).engine for _ in range(6)]
    assert engines in (["a", "b"] * 3, ["b", "a"] * 3), engines


def test_the_engine_with_the_most_free_slots_is_chosen(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two(b={"max_concurrent_runs": 1}))
    command, gate = cluster.hanging("x")
    first = cluster.submit(command=command)
    second = cluster.submit(command=command)
    assert {cluster.running(first.id).engine, cluster.running(second.id).engine} == {"a", "b"}
    # a has one free slot, b none: a run goes to a even though a is busier.
    third = cluster.submit(command=command)
    assert cluster.running(third.id).engine == "a"
    gate.release()
    for run in (first, second, third):
        assert cluster.ended(run.id).status == RunStatus.SUCCEEDED


def test_a_full_engine_spills_its_queue_over_to_a_free_one(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two(a={"max_concurrent_runs": 1}, b={"max_concurrent_runs": 1}))
    hold_a, gate_a = cluster.hanging("on-a")
    hold_b, gate_b = cluster.hanging("on-b")
    a = cluster.submit(command=hold_a, engine="a")
    b = cluster.submit(command=hold_b, engine="b")
    cluster.running(a.id)
    cluster.running(b.id)
    waiting = [cluster.submit(), cluster.submit()]
    assert all(cluster.runner.get(r.id).status == RunStatus.QUEUED for r in waiting)
    assert cluster.runner.queued_for(cluster.runner.engines.handles["a"]) == 2
    gate_b.release()  # b frees first: the oldest waiting run goes there
    first = cluster.ended(waiting[0].id)
    assert first.engine == "b"
    assert cluster.ended(waiting[1].id).engine == "b"
    gate_a.release()
    assert cluster.ended(a.id).engine == "a"


def test_fifo_holds_among_runs_that_could_use_the_same_engines(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(two(a={"max_concurrent_runs": 1}, b={"max_concurrent_runs": 1}))
    hold, gate = cluster.hanging("hold")
    busy = cluster.submit(command=hold, engine="a")
    cluster.running(busy.id)
    for_a = [cluster.submit(engine="a") for _ in range(3)]
    # A run for b is not held up by the runs waiting for a.
    assert cluster.ended(cluster.submit(engine="b").id).engine == "b"
    assert all(cluster.runner.get(r.id).status == RunStatus.QUEUED for r in for_a)
    gate.release()
    for run in for_a:
        cluster.ended(run.id)
    assert cluster.created_on("a")[1:] == [r.id for r in for_a]


def test_an_engine_that_dies_under_a_run_ends_it_naming_the_engine(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(two())
    hold, gate = cluster.hanging("doomed")
    doomed = cluster.submit(command=hold, engine="a")
    cluster.running(doomed.id)
    cluster.daemons["a"].down = True
    gate.release()  # its output ends; the wait finds the engine gone
    other = cluster.submit(engine="b")
    record = cluster.ended(doomed.id)
    assert record.status == RunStatus.ERROR
    assert record.error is not None and record.error.phase == Phase.RUN
    assert record.error.message.startswith("engine a: "), record.error.message
    assert cluster.ended(other.id).status == RunStatus.SUCCEEDED
    handle = cluster.runner.engines.handles["a"]
    wait_until(lambda: handle.state == "down", "engine a to be seen down")
    assert handle.last_error


def test_a_run_placed_on_an_engine_that_cannot_be_reached_goes_elsewhere(
    make_cluster: MakeCluster,
) -> None:
    # Checks are rare here: a goes away between two of them, and a run is
    # placed on it (b is full); it comes back to the queue and runs on b.
    cluster = make_cluster(two(b={"max_concurrent_runs": 1}), interval=3600)
    hold, gate = cluster.hanging("hold")
    busy = cluster.submit(command=hold, engine="b")
    cluster.running(busy.id)
    cluster.daemons["a"].down = True
    run = cluster.submit()
    handle = cluster.runner.engines.handles["a"]
    wait_until(lambda: handle.state == "down", "the failed placement to mark a down")
    assert cluster.runner.get(run.id).status == RunStatus.QUEUED
    assert cluster.runner.get(run.id).engine is None
    gate.release()
    record = cluster.ended(run.id)
    assert record.status == RunStatus.SUCCEEDED
    assert record.engine == "b"
    assert cluster.created_on("a") == []
    statuses = [e.data for e in events_of(cluster.runner.settings, record.id) if e.type == "status"]
    assert [s.get("engine") for s in statuses[1:2]] == ["b"]


def test_a_run_waits_for_its_engine_to_come_back_and_then_runs(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(two(a={"down": True}))
    assert cluster.runner.engines.handles["a"].state == "down"
    run = cluster.submit(engine="a")
    notice = wait_until(
        lambda: [e for e in events_of(cluster.runner.settings, run.id) if e.type == "notice"],
        "a notice that the run waits",
    )
    assert "none of the engines this run may use is up (a)" in notice[0].data["message"]
    assert cluster.runner.get(run.id).status == RunStatus.QUEUED
    cluster.daemons["a"].down = False
    record = cluster.ended(run.id)
    assert (record.status, record.engine) == (RunStatus.SUCCEEDED, "a")
    notices = [e for e in events_of(cluster.runner.settings, run.id) if e.type == "notice"]
    assert len(notices) == 1


def test_a_run_whose_engines_stay_down_ends_after_the_placement_timeout(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(two(a={"down": True}, b={"down": True}), placement_timeout=0.2)
    record = cluster.ended(cluster.submit().id)
    assert record.status == RunStatus.ERROR
    assert record.error is not None and record.error.phase == Phase.QUEUE
    assert "PULLRUN_PLACEMENT_TIMEOUT" in record.error.message
    assert "engines it may use: a, b" in record.error.message
    assert record.engine is None


def test_a_canceled_waiting_run_ends_at_once(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(two(a={"down": True}))
    run = cluster.submit(engine="a")
    cluster.runner.cancel(run.id)
    record = cluster.ended(run.id)
    assert (record.status, record.error and record.error.phase) == (
        RunStatus.CANCELED,
        Phase.QUEUE,
    )


def test_engine_changes_go_out_on_the_feed(
    make_cluster: MakeCluster, loop: asyncio.AbstractEventLoop
) -> None:
    cluster = make_cluster(two())
    runner = cluster.runner

    def engine_events() -> list[dict[str, Any]]:
        async def read() -> list[bytes]:
            return [raw for _, raw in runner.feed._events]

        found = []
        for raw in on_loop(loop, read()):
            lines = raw.decode().splitlines()
            if "event: engine" in lines:
                data = next(line for line in lines if line.startswith("data: "))
                found.append(orjson.loads(data.removeprefix("data: ")))
        return found

    wait_until(lambda: len(engine_events()) >= 2, "both engines seen up")
    assert {(e["name"], e["state"]) for e in engine_events()} == {("a", "up"), ("b", "up")}
    cluster.daemons["b"].down = True
    down = wait_until(
        lambda: [e for e in engine_events() if e["state"] == "down"], "engine b seen down"
    )
    assert down[0]["name"] == "b" and down[0]["last_error"]
    assert down[0]["host"] == "DOCKER_HOST or the default socket"
    cluster.daemons["b"].down = False
    wait_until(
        lambda: [e["state"] for e in engine_events() if e["name"] == "b"][-1] == "up",
        "engine b seen up again",
    )
    view = runner.engines.handles["a"].view()
    assert (view["os"], view["arch"], view["cpus"]) == ("linux", "amd64", 2)
    assert view["version"] and view["api_version"] and view["memory"]
