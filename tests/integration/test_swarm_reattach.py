"""Re-attach of swarm runs after a restart: the real server, with the swarm of
scripts/swarm.sh as its engine, is killed (SIGKILL) while one run prints a
line every 50 ms on stdout and stderr, one is about to exit and one runs
towards its timeout; started again on the same data dir, it finds their
services by label and goes on with each (runs/swarm.py, `SwarmRun.resume`).
"""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest

from backend.runs.reattach import timestamp
from tests.integration.test_reattach_restart import events_until, is_notice, lines, numbered
from tests.support.runs import gate, start
from tests.support.server import ServerFactory
from tests.support.sse import Event
from tests.support.swarm import Swarm
from tests.support.wait import collect, wait_until

SETTINGS: dict[str, Any] = {"partial_line_delay": 0.1}
# Lines every 50 ms until the test opens its gate.
PRINTER = (
    "i=0; while [ ! -e /tmp/gate ]; do i=$((i + 1)); echo out-$i; echo err-$i >&2; "
    "sleep 0.05; done; echo out-end; exit 3"
)
ABOUT_TO_EXIT = f"echo start; {gate()}; echo printed-while-down; echo also-on-stderr >&2; exit 7"
# Its timeout comes before its own end (TIMEOUT + 6 s from its start); the
# server is down until past its deadline: counted from the restart instead,
# the task would end on its own first and succeed.
TIMEOUT = 8
OUTLIVES_ITS_TIMEOUT = f"echo start; sleep {TIMEOUT + 6}"


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    found = Swarm.from_env()
    if found is None:
        pytest.skip("no swarm: PULLRUN_TEST_SWARM_HOST is not set (scripts/swarm.sh, make engines)")
    return found


def task_of(swarm: Swarm, run_id: str) -> dict[str, Any] | None:
    """The run's task, as the manager has it (None before it has one)."""
    with docker.APIClient(base_url=swarm.manager, version="auto") as api:
        tasks = api.tasks(filters={"service": f"pullrun-{run_id}"})
    return max(tasks, key=lambda t: str(t["CreatedAt"])) if tasks else None


def state_of(swarm: Swarm, run_id: str) -> str | None:
    task = task_of(swarm, run_id)
    return str(task["Status"]["State"]) if task else None


def notice_texts(events: list[Event]) -> list[str]:
    return [e.data["message"] for e in events if e.type == "notice"]


def open_gate(swarm: Swarm, run_id: str) -> None:
    """`touch /tmp/gate` in the run's container, on whichever node runs it."""

    def running() -> tuple[str, str] | None:
        for host in swarm.hosts:
            with docker.APIClient(base_url=host, version="auto") as api:
                found = api.containers(filters={"label": f"pullrun.run={run_id}"})
            if found:
                return host, str(found[0]["Id"])
        return None

    host, container = wait_until(running, f"run {run_id}'s container to be running")
    with docker.APIClient(base_url=host, version="auto") as api:
        exec_id = api.exec_create(container, ["touch", "/tmp/gate"])["Id"]
        api.exec_start(exec_id)
        ended = wait_until(
            lambda: (info := api.exec_inspect(exec_id))["ExitCode"] is not None and info,
            f"the exec that opens the gate of run {run_id} to end",
        )
    assert ended["ExitCode"] == 0, ended


def test_a_killed_server_goes_on_with_every_swarm_run_where_it_was(
    swarm: Swarm,
    server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    registry: str,
) -> None:
    image = f"{registry}/pullrun/busybox:latest"  # a swarm task always pulls: from the registry
    engines = swarm.engines_file(
        tmp_path_factory.mktemp("swarm") / "engines.toml", max_concurrent_runs=8
    )
    settings = {**SETTINGS, "engines_file": engines}
    server = server_factory(**settings)
    with server.client() as client:
        runs = {
            "printer": start(client, image=image, command=["sh", "-c", PRINTER]),
            "exits": start(client, image=image, command=["sh", "-c", ABOUT_TO_EXIT]),
            "timeout": start(
                client, image=image, command=["sh", "-c", OUTLIVES_ITS_TIMEOUT], timeout=TIMEOUT
            ),
        }
        urls = {name: run["links"]["events"] for name, run in runs.items()}
        ids = {name: run["id"] for name, run in runs.items()}
        # Each where it should be when the server dies.
        events_until(
            client,
            urls["printer"],
            lambda e: e.type == "log" and "err-3" in e.data["lines"],
            "the printer to print err-3",
        )
        for name in ("exits", "timeout"):
            events_until(client, urls[name], lambda e: e.type == "log", f"{name} to start")
    server.kill()

    # While it is down: `exits` goes on and ends; the printer prints on; the
    # deadline of `timeout` (from its task's start) passes.
    open_gate(swarm, ids["exits"])
    wait_until(
        lambda: state_of(swarm, ids["exits"]) == "failed", "`exits` to end while the server is down"
    )
    task = task_of(swarm, ids["timeout"])
    assert task is not None and task["Status"]["State"] == "running", task
    started = timestamp(task["Status"]["Timestamp"])  # the time of its `running` state
    assert started is not None
    wait_until(lambda: time.time() > started + TIMEOUT, "the deadline of `timeout` to pass")

    server = server_factory(server.data_dir, **settings)
    with server.client() as again:
        events_until(
            again,
            urls["printer"],
            is_notice("pullrun restarted: re-attached to its task"),
            "the printer to be re-attached",
        )
        open_gate(swarm, ids["printer"])
        ended = {name: collect(again, url) for name, url in urls.items()}
        final = {name: again.get(run["links"]["self"]).json() for name, run in runs.items()}

    for name, events in ended.items():
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1)), name
        assert [e.type for e in events].count("done") == 1 and events[-1].type == "done", name
        assert events[-1].data["status"] == final[name]["status"], name
        swarm.wait_gone(ids[name])

    printer = final["printer"]
    assert (printer["status"], printer["exit_code"]) == ("failed", 3), printer
    printed = lines(ended["printer"])
    assert printed["stdout"][-1] == "out-end" and numbered(printed["stdout"][:-1], "out-")
    assert numbered(printed["stderr"], "err-")
    assert len(printed["stderr"]) == len(printed["stdout"]) - 1
    assert printer["log_lines"] == 2 * len(printed["stderr"]) + 1

    exits = final["exits"]
    assert (exits["status"], exits["exit_code"]) == ("failed", 7), exits
    assert lines(ended["exits"]) == {
        "stdout": ["start", "printed-while-down"],
        "stderr": ["also-on-stderr"],
    }
    assert "pullrun restarted: its task ended meanwhile" in notice_texts(ended["exits"])

    timed = final["timeout"]
    assert timed["status"] == "timed_out", timed
    assert lines(ended["timeout"]) == {"stdout": ["start"]}
    # Back past its deadline: its service removed at once (or, a slow restart,
    # it had ended on its own after its deadline).
    assert notice_texts(ended["timeout"])[-2:] in (
        [
            "pullrun restarted: re-attached to its task",
            f"timeout of {TIMEOUT}s reached: stopping its service",
        ],
        [
            "pullrun restarted: its task ended meanwhile",
            f"timeout of {TIMEOUT}s passed while pullrun was down: "
            f"the task ran {TIMEOUT + 6:.1f}s and ended by itself",
        ],
    ), notice_texts(ended["timeout"])


def test_a_run_whose_service_went_away_while_the_server_was_down_is_interrupted(
    swarm: Swarm,
    server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    registry: str,
) -> None:
    engines = swarm.engines_file(tmp_path_factory.mktemp("swarm") / "engines.toml")
    settings = {**SETTINGS, "engines_file": engines}
    server = server_factory(**settings)
    with server.client() as client:
        run = start(
            client, image=f"{registry}/pullrun/busybox:latest", command=["sh", "-c", gate()]
        )
        events_until(
            client,
            run["links"]["events"],
            lambda e: e.type == "status" and e.data["status"] == "running",
            "the run to be running",
        )
    server.kill()
    swarm.cli("service", "rm", f"pullrun-{run['id']}")
    swarm.tidy(run["id"])  # (its container: engines before 23.0 leave it running)
    server = server_factory(server.data_dir, **settings)
    with server.client() as again:
        events = collect(again, run["links"]["events"])
        record = again.get(run["links"]["self"]).json()
    assert record["status"] == "error" and record["error"] == {
        "phase": "interrupted",
        "message": "the server stopped while this run was running, and its service is gone",
    }
    assert events[-1].data["error"] == record["error"]
    swarm.wait_gone(run["id"])
