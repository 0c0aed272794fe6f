"""Runs on a real two-node Docker Swarm (scripts/swarm.sh): a run is a one-task
service (a `replicated-job`; before API 1.43 one replica that is not
restarted) placed by the cluster and streamed with the same contract as a run
on a single engine (docs/api.md; README, "Running on a swarm").

After every ending the run's service is checked gone with the manager's own
docker CLI (`docker service ls --filter label=pullrun.run=ID`), and its
container with each node's engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.runs import SLEEPER, run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.sse import Event, log_lines
from tests.support.swarm import ENGINE, Swarm
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import Deadline, collect, wait_for_status, wait_until

NOWHERE = "node.labels.pullrun.node==nowhere"  # a constraint no node meets


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    found = Swarm.from_env()
    if found is None:
        pytest.skip("no swarm: PULLRUN_TEST_SWARM_HOST is not set (scripts/swarm.sh, make engines)")
    nodes = found.cli("node", "ls", "--format", "{{.Status}} {{.Availability}}").split("\n")
    assert [n for n in nodes if n], f"the swarm of {found.manager} has no node"
    return found


@pytest.fixture(scope="module")
def busybox(registry: str) -> str:
    """In the registry: the node the cluster picks pulls it (a swarm task always pulls)."""
    return f"{registry}/pullrun/busybox:latest"


@pytest.fixture(scope="module")
def swarm_server(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the swarm as its only engine, for the tests that need no
    settings of their own; engines checked every second (`nodes` in /api/engines)."""
    path = swarm.engines_file(
        tmp_path_factory.mktemp("swarm") / "engines.toml", max_concurrent_runs=8
    )
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("server") / "data")
    try:
        yield factory(
            engines_file=path, engine_check_interval=1, allowed_constraints="node.labels.*"
        )
    finally:
        factory.stop_all()


@pytest.fixture
def swarm_client(swarm_server: ServerProcess) -> Iterator[httpx.Client]:
    with swarm_server.client() as c:
        yield c


def statuses(events: list[Event]) -> list[str]:
    return [e.data["status"] for e in events if e.type == "status"]


def notices(events: list[Event]) -> list[str]:
    return [e.data["message"] for e in events if e.type == "notice"]


def read_until(
    client: httpx.Client, url: str, what: str, found: Callable[[Event], bool]
) -> list[Event]:
    """The run's events up to the first that `found` accepts (fails at `done` first)."""
    events: list[Event] = []
    with client.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        for event in Deadline(f"{what} on {url}").events(response):
            events.append(event)
            if found(event):
                return events
            assert event.type != "done", f"{url} ended before {what}: {events}"
    raise AssertionError(f"{url} ended without {what}")


def cancel(client: httpx.Client, run_id: str) -> list[Event]:
    """POST .../cancel; the run's whole stream to `done`."""
    response = client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    return collect(client, f"/api/runs/{run_id}/events")


def engine_nodes(client: httpx.Client) -> list[dict[str, Any]]:
    views = {v["name"]: v for v in client.get("/api/engines").json()["engines"]}
    nodes: list[dict[str, Any]] = views[ENGINE].get("nodes") or []
    return nodes


# -- runs that end on their own ----------------------------------------------------------


def test_a_run_succeeds_with_its_lines_exit_code_and_node(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    run, events = run_to_end(
        swarm_client, image=busybox, command=["sh", "-c", "echo one; echo two; echo three"]
    )
    assert run["status"] == "succeeded", run["error"]
    assert run["exit_code"] == 0 and run["error"] is None and run["oom_killed"] is False
    assert log_lines(events) == ["one", "two", "three"]
    assert swarm_client.get(run["links"]["logs"]).text == "one\ntwo\nthree\n"
    assert run["engine"] == ENGINE
    # The node the cluster chose: on the record, on the status that left the
    # queue, in a notice; one of the swarm's nodes.
    assert run["node"] in {node["name"] for node in engine_nodes(swarm_client)}
    left = next(e.data for e in events if e.type == "status" and e.data["status"] != "queued")
    assert (left["engine"], left["node"]) == (ENGINE, run["node"])
    assert f"swarm: the task is on node {run['node']}" in notices(events)
    # queued, pulling (the node prepares the task, when seen doing so: it may
    # be through before pullrun looks), starting, running; never `creating`.
    assert statuses(events) in (
        ["queued", "pulling", "starting", "running"],
        ["queued", "starting", "running"],
    ), statuses(events)
    assert events[-1].data["status"] == "succeeded" and events[-1].data["exit_code"] == 0
    assert run["log_lines"] == 3 and run["started_at"] and run["finished_at"]
    swarm.wait_gone(run["id"])


def test_a_non_zero_exit_fails_with_its_code(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    run, events = run_to_end(swarm_client, image=busybox, command=["sh", "-c", "echo bye; exit 3"])
    assert run["status"] == "failed"
    assert run["exit_code"] == 3 and run["error"] is None
    assert events[-1].data["exit_code"] == 3
    assert log_lines(events) == ["bye"]
    swarm.wait_gone(run["id"])


def test_stdout_and_stderr_are_kept_apart(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2"
    run, events = run_to_end(swarm_client, image=busybox, command=["sh", "-c", script])
    assert run["status"] == "succeeded", run["error"]
    # Each stream in its own order; the order across them is the task log's.
    assert log_lines(events, "stdout") == ["out1", "out2"]
    assert log_lines(events, "stderr") == ["err1", "err2"]
    logs = run["links"]["logs"]
    assert swarm_client.get(logs, params={"stream": "stdout"}).text == "out1\nout2\n"
    assert swarm_client.get(logs, params={"stream": "stderr"}).text == "err1\nerr2\n"
    assert sorted(log_lines(events)) == ["err1", "err2", "out1", "out2"]
    swarm.wait_gone(run["id"])


def test_a_partial_line_at_the_end_is_kept_and_closed(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    run, events = run_to_end(
        swarm_client, image=busybox, command=["sh", "-c", "echo whole; printf 'prompt> '"]
    )
    assert run["status"] == "succeeded", run["error"]
    assert log_lines(events) == ["whole", "prompt> "]
    logs = [e.data for e in events if e.type == "log"]
    # The open line went out as such, and a final event closed it.
    assert any(d["partial"] and d["lines"][-1] == "prompt> " for d in logs), logs
    assert logs[-1]["partial"] is False
    assert swarm_client.get(run["links"]["logs"]).text == "whole\nprompt> \n"
    assert run["log_lines"] == 2
    swarm.wait_gone(run["id"])


def test_an_image_missing_from_the_registry_is_a_pull_error_in_the_engines_words(
    swarm: Swarm, swarm_client: httpx.Client, registry: str
) -> None:
    ref = f"{registry}/pullrun/no-such-image:latest"
    run, events = run_to_end(swarm_client, image=ref, command=["true"])
    assert run["status"] == "error", run
    assert run["error"]["phase"] == "pull"
    message = run["error"]["message"]
    assert "no-such-image" in message and ("No such image" in message or "not found" in message)
    assert events[-1].data["error"] == run["error"]
    assert "running" not in statuses(events)
    swarm.wait_gone(run["id"])


# -- cancel and timeout -------------------------------------------------------------------


def test_cancel_in_the_queue_while_no_node_meets_the_constraint(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    record = start(swarm_client, image=busybox, command=["true"], constraints=[NOWHERE])
    # The task waits on the cluster, and the cluster's reason is passed on.
    seen = read_until(
        swarm_client,
        record["links"]["events"],
        "the cluster's reason for the pending task",
        lambda e: e.type == "notice" and "no suitable node" in e.data["message"],
    )
    assert seen[-1].data["message"].startswith("swarm: ")
    assert swarm.services_of(record["id"]), "no service on the swarm for the queued run"
    assert swarm_client.get(record["links"]["self"]).json()["status"] == "queued"
    events = cancel(swarm_client, record["id"])
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "queue", "message": "canceled by request"}
    assert statuses(events) == ["queued"]
    assert swarm_client.get(record["links"]["self"]).json()["node"] is None
    swarm.wait_gone(record["id"])


def test_cancel_while_the_node_pulls(
    swarm: Swarm, swarm_client: httpx.Client, registry: str
) -> None:
    # The registry stops sending after 1 MiB: the task stays `preparing`.
    with ThrottleProxy(registry, rate=2 << 20, stall_after=1 << 20) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        try:
            record = start(swarm_client, image=ref, command=["true"])
            wait_for_status(swarm_client, record["id"], "pulling")
            assert proxy.stalled.wait(60), "the node's pull never got 1 MiB through the proxy"
            events = cancel(swarm_client, record["id"])
            swarm.wait_gone(record["id"])
        finally:
            swarm.remove_image(ref)
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "pull", "message": "canceled by request"}
    assert statuses(events) == ["queued", "pulling"]
    assert not [e for e in events if e.type == "log"]


def test_cancel_while_running(swarm: Swarm, swarm_client: httpx.Client, busybox: str) -> None:
    record = start(swarm_client, image=busybox, command=SLEEPER)
    read_until(
        swarm_client,
        record["links"]["events"],
        "the line `started`",
        lambda e: e.type == "log" and "started" in e.data["lines"],
    )
    # /api/engines counts the task on its node.
    wait_until(
        lambda: sum(n["pullrun_tasks"] for n in engine_nodes(swarm_client)) >= 1,
        "/api/engines to count the running task on a node",
    )
    events = cancel(swarm_client, record["id"])
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "run", "message": "canceled by request"}
    assert log_lines(events) == ["started"]
    swarm.wait_gone(record["id"])


def test_timeout_ends_timed_out_and_removes_the_service(
    swarm: Swarm, swarm_client: httpx.Client, busybox: str
) -> None:
    run, events = run_to_end(swarm_client, image=busybox, command=SLEEPER, timeout=1)
    assert run["status"] == "timed_out", run
    assert log_lines(events) == ["started"]
    assert any(m.startswith("timeout of 1s reached") for m in notices(events)), notices(events)
    swarm.wait_gone(run["id"])


# -- placement -----------------------------------------------------------------------------


def test_a_constraint_nobody_meets_ends_in_the_queue_with_the_clusters_message(
    swarm: Swarm,
    server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    busybox: str,
) -> None:
    path = swarm.engines_file(tmp_path_factory.mktemp("swarm") / "engines.toml")
    server = server_factory(engines_file=path, placement_timeout=3)
    with server.client() as client:
        run, events = run_to_end(client, image=busybox, command=["true"], constraints=[NOWHERE])
    assert run["status"] == "error", run
    assert run["error"]["phase"] == "queue"
    message = run["error"]["message"]
    assert "PULLRUN_PLACEMENT_TIMEOUT" in message and "no suitable node" in message, message
    assert any("swarm: no suitable node" in m for m in notices(events)), notices(events)
    assert statuses(events) == ["queued"] and run["node"] is None
    swarm.wait_gone(run["id"])


def test_constraints_are_checked_against_the_policy(
    swarm_client: httpx.Client, busybox: str
) -> None:
    response = swarm_client.post(
        "/api/runs", json={"image": busybox, "constraints": ["engine.labels.gpu==true"]}
    )
    assert response.status_code == 422, response.text
    assert "PULLRUN_ALLOWED_CONSTRAINTS" in response.text


def test_a_run_with_constraints_and_no_swarm_engine_is_422(
    client: httpx.Client, busybox: str
) -> None:
    """(The shared server, on the local engine alone.)"""
    before = client.get("/api/runs").json()["runs"]
    response = client.post(
        "/api/runs", json={"image": busybox, "constraints": ["node.labels.pool==batch"]}
    )
    assert response.status_code == 422, response.text
    assert "only a swarm engine takes constraints" in response.text
    assert client.get("/api/runs").json()["runs"] == before


# -- /api/engines ------------------------------------------------------------------------


def test_api_engines_shows_the_swarm_and_its_nodes(
    swarm: Swarm, swarm_client: httpx.Client
) -> None:
    view = next(
        v for v in swarm_client.get("/api/engines").json()["engines"] if v["name"] == ENGINE
    )
    assert view["kind"] == "swarm" and view["state"] == "up", view
    assert view["host"] == swarm.manager
    nodes = view["nodes"]
    # As the manager's CLI lists them.
    assert len(nodes) == len(swarm.cli("node", "ls", "-q").split())
    assert sorted(n["role"] for n in nodes) == sorted(
        ["manager", "worker"] if swarm.worker else ["manager"]
    )
    for node in nodes:
        assert set(node) == {
            "name",
            "role",
            "state",
            "availability",
            "os",
            "arch",
            "cpus",
            "memory",
            "pullrun_tasks",
        }
        assert node["name"] and node["state"] == "ready" and node["availability"] == "active"
        assert node["os"] == "linux" and node["arch"]
        assert node["cpus"] > 0 and node["memory"] > 0
        assert isinstance(node["pullrun_tasks"], int)
