"""Cancel in every phase, timeouts, the queue and its limit."""

from __future__ import annotations

import docker
import httpx

from tests.support.runs import SLEEPER, containers_of, remove_image, run_to_end, start
from tests.support.server import ServerFactory
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import collect, wait_for_status, wait_until


def test_timeout_stops_the_container(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    # SLEEPER sleeps 300 s, longer than run_to_end waits: ending at all is the timeout's doing.
    run, events = run_to_end(client, image=image, command=SLEEPER, timeout=1)
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
        try:
            record = start(client, image=ref, pull="always")
            collect(client, record["links"]["events"], until="pull")
            assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
            events = collect(client, record["links"]["events"])
        finally:
            remove_image(docker_api, ref)
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"]["phase"] == "pull"
    assert containers_of(docker_api, record["id"]) == []


def test_cancel_right_after_submit_leaves_nothing(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    """Whichever phase the cancel lands in (queue, create, start), the run ends
    canceled and no container is left."""
    for _ in range(5):
        record = start(client, image=image, command=SLEEPER)
        client.post(f"/api/runs/{record['id']}/cancel")
        events = collect(client, record["links"]["events"])
        done = events[-1].data
        assert done["status"] == "canceled"
        assert done["error"]["message"] == "canceled by request"
        assert containers_of(docker_api, record["id"]) == []


def test_queue_is_fifo_limited_and_a_queued_run_can_be_canceled(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    server = server_factory(max_concurrent_runs=1, max_queued_runs=1)
    with server.client() as client:
        first = start(client, image=image, command=SLEEPER)
        wait_for_status(client, first["id"], "running")
        second = start(client, image=image, command=["echo", "second"])
        assert client.get(f"/api/runs/{second['id']}").json()["status"] == "queued"
        third = client.post("/api/runs", json={"image": image})
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "queue_full"
        # Canceling the queued run ends it at once: it does not wait for the
        # first run (300 s of sleep, still running) to free the slot.
        assert client.post(f"/api/runs/{second['id']}/cancel").status_code == 202
        events = collect(client, second["links"]["events"])
        assert [e.type for e in events] == ["status", "done"]
        assert events[-1].data["error"] == {"phase": "queue", "message": "canceled by request"}
        assert containers_of(docker_api, second["id"]) == []
        assert client.get(f"/api/runs/{first['id']}").json()["status"] == "running"
        # The freed queue slot takes a new run, which starts once the first ends.
        fourth = start(client, image=image, command=["echo", "fourth"])
        client.post(f"/api/runs/{first['id']}/cancel")
        events = collect(client, fourth["links"]["events"])
        assert events[-1].data["status"] == "succeeded"
        assert events[-1].data["durations"]["queue"] > 0


def test_output_past_max_log_bytes_is_counted_not_kept(
    server_factory: ServerFactory, image: str
) -> None:
    server = server_factory(max_log_bytes=10_000)
    with server.client() as client:
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
    pull yet, and the cancel still ends the run at once (the proxy stalls until
    released, and the server's stall timeout is 300 s: a run that ends at all,
    canceled, before the deadline was ended by the cancel)."""
    with ThrottleProxy(registry, stall_after=0) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        try:
            record = start(client, image=ref, pull="always")
            wait_for_status(client, record["id"], "pulling")
            # The engine is inside the pull: it has asked the registry, which is silent.
            wait_until(
                lambda: proxy.connections > 0 and proxy.bytes_up > 0,
                "the engine to send its request through the stalled proxy",
            )
            assert proxy.bytes_down == 0
            assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
            events = collect(client, record["links"]["events"])
            assert proxy.bytes_down == 0  # still stalled: nothing but the cancel ended it
        finally:
            proxy.release()
            remove_image(docker_api, ref)
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": "pull", "message": "canceled by request"}
    assert client.get(record["links"]["self"]).json()["status"] == "canceled"


def test_no_queue_room_still_runs_on_idle_workers(
    server_factory: ServerFactory, image: str
) -> None:
    server = server_factory(max_queued_runs=0, max_concurrent_runs=2)
    with server.client() as client:
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
