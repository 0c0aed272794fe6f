"""Cancel in every phase, timeouts, the queue and its limit."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.runs import containers_of, remove_image, run_to_end, start
from tests.support.server import ServerProcess
from tests.support.sse import collect
from tests.support.throttle_proxy import ThrottleProxy

SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; echo started; sleep 60 & wait"]


def wait_for_status(client: httpx.Client, run_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/api/runs/{run_id}").json()["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {status}")


def test_timeout_stops_the_container(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    started = time.monotonic()
    run, events = run_to_end(client, image=image, command=SLEEPER, timeout=1)
    assert time.monotonic() - started < 15
    assert run["status"] == "timed_out"
    assert run["exit_code"] == 143
    assert any(e.type == "notice" and "timeout" in e.data["message"] for e in events)
    assert containers_of(docker_api, run["id"]) == []


def test_cancel_running_container(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    record = start(client, image=image, command=SLEEPER)
    wait_for_status(client, record["id"], "running")
    response = client.post(f"/api/runs/{record['id']}/cancel")
    assert response.status_code == 202
    events = collect(client, record["links"]["events"])
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "run", "message": "canceled by request"}
    assert containers_of(docker_api, record["id"]) == []
    again = client.post(f"/api/runs/{record['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


def test_cancel_during_pull(
    client: httpx.Client, registry: str, docker_api: docker.APIClient
) -> None:
    with ThrottleProxy(registry, rate=256 * 1024) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        remove_image(docker_api, ref)
        record = start(client, image=ref, pull="always")
        events = collect(client, record["links"]["events"], until="pull", timeout=30)
        assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
        events = collect(client, record["links"]["events"])
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"]["phase"] == "pull"
    assert containers_of(docker_api, record["id"]) == []
    remove_image(docker_api, ref)


def test_cancel_right_after_submit_leaves_nothing(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    """Whichever phase the cancel lands in (queue, create, start), the run ends
    canceled and no container is left."""
    for _ in range(5):
        record = start(client, image=image, command=SLEEPER)
        client.post(f"/api/runs/{record['id']}/cancel")
        events = collect(client, record["links"]["events"], timeout=60)
        done = events[-1].data
        assert done["status"] == "canceled"
        assert done["error"]["message"] == "canceled by request"
        assert containers_of(docker_api, record["id"]) == []


@pytest.fixture
def one_slot_server(tmp_path: Path) -> ServerProcess:
    proc = ServerProcess(tmp_path / "data", max_concurrent_runs=1, max_queued_runs=1)
    return proc


def test_queue_is_fifo_limited_and_a_queued_run_can_be_canceled(
    one_slot_server: ServerProcess, image: str, docker_api: docker.APIClient
) -> None:
    with one_slot_server as server, httpx.Client(base_url=server.base_url) as client:
        first = start(client, image=image, command=SLEEPER)
        wait_for_status(client, first["id"], "running")
        second = start(client, image=image, command=["echo", "second"])
        assert client.get(f"/api/runs/{second['id']}").json()["status"] == "queued"
        third = client.post("/api/runs", json={"image": image})
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "queue_full"
        # Canceling the queued run ends it at once; it never starts.
        assert client.post(f"/api/runs/{second['id']}/cancel").status_code == 202
        events = collect(client, second["links"]["events"], timeout=10)
        assert [e.type for e in events] == ["status", "done"]
        assert events[-1].data["error"] == {"phase": "queue", "message": "canceled by request"}
        assert containers_of(docker_api, second["id"]) == []
        # The freed queue slot takes a new run, which starts once the first ends.
        fourth = start(client, image=image, command=["echo", "fourth"])
        client.post(f"/api/runs/{first['id']}/cancel")
        events = collect(client, fourth["links"]["events"], timeout=60)
        assert events[-1].data["status"] == "succeeded"
        assert events[-1].data["durations"]["queue"] > 0


def test_output_past_max_log_bytes_is_counted_not_kept(tmp_path: Path, image: str) -> None:
    with (
        ServerProcess(tmp_path / "data", max_log_bytes=10_000) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        run, events = run_to_end(client, image=image, command=["seq", "1", "100000"])
        notices = [e for e in events if e.type == "notice"]
        assert len(notices) == 1 and "max_log_bytes" in notices[0].data["message"]
        done = events[-1].data
        assert done["log_lines"] == 100000
        assert 0 < done["dropped_lines"] < 100000
        kept = sum(len(e.data["lines"]) for e in events if e.type == "log")
        assert kept + done["dropped_lines"] == 100000
        assert done["dropped_bytes"] > 0
        text = client.get(run["links"]["logs"]).text
        assert len(text) <= 10_000
        assert run["status"] == "succeeded"


def test_cancel_before_the_engine_answers_the_pull(
    client: httpx.Client, registry: str, docker_api: docker.APIClient
) -> None:
    """A registry that never answers: the engine has not flushed a byte of the
    pull yet, and the cancel still ends the run at once."""
    with ThrottleProxy(registry, stall_after=0) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        record = start(client, image=ref, pull="always")
        wait_for_status(client, record["id"], "pulling")
        time.sleep(0.5)
        asked = time.monotonic()
        assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
        events = collect(client, record["links"]["events"], timeout=30)
        assert time.monotonic() - asked < 5
        proxy.release()
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "pull", "message": "canceled by request"}
    assert client.get(record["links"]["self"]).json()["status"] == "canceled"
    remove_image(docker_api, ref)


def test_no_queue_room_still_runs_on_idle_workers(tmp_path: Path, image: str) -> None:
    with (
        ServerProcess(tmp_path / "data", max_queued_runs=0, max_concurrent_runs=2) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        run, _ = run_to_end(client, image=image, command=["echo", "ok"])
        assert run["status"] == "succeeded"


def test_nothing_counts_as_dropped_when_nothing_is_dropped(
    client: httpx.Client, image: str
) -> None:
    for body in (
        {"command": ["sh", "-c", "echo one; echo two"], "tty": True},
        {"command": ["sh", "-c", "printf 'a\\r\\nb\\r\\n'"]},
        {"command": ["echo", "héllo wörld"]},
        {"command": ["sh", "-c", "printf 'part'; sleep 0.5; echo rest"]},
    ):
        _, events = run_to_end(client, image=image, **body)
        assert events[-1].data["dropped_bytes"] == 0, body
        assert events[-1].data["dropped_lines"] == 0, body
