"""Restarts: replay survives, a crash is recovered, a graceful stop ends every run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import docker
import httpx

from tests.support.runs import containers_of, run_to_end, start
from tests.support.server import ServerProcess
from tests.support.sse import Event, collect

SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; echo started; sleep 60 & wait"]


def raw(client: httpx.Client, url: str) -> bytes:
    with client.stream("GET", url) as response:
        return b"".join(
            block + b"\n\n"
            for block in b"".join(response.iter_raw()).split(b"\n\n")
            if block and not block.startswith(b":")
        )


def wait_running(client: httpx.Client, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"/api/runs/{run_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_replay_after_restart_is_byte_for_byte(tmp_path: Path, image: str) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server, httpx.Client(base_url=server.base_url) as client:
        run, _ = run_to_end(
            client, image=image, command=["sh", "-c", "seq 1 1000; printf 'x\\r\\n\\xff'"]
        )
        live = raw(client, run["links"]["events"])
        logs = client.get(run["links"]["logs"]).text
    with ServerProcess(data) as server, httpx.Client(base_url=server.base_url) as client:
        assert raw(client, run["links"]["events"]) == live
        assert client.get(run["links"]["logs"]).text == logs
        again = client.get(run["links"]["self"]).json()
        assert again == run
        assert client.get("/api/runs").json()["runs"][0]["id"] == run["id"]


def test_graceful_shutdown_cancels_runs_and_every_subscriber_gets_done(
    tmp_path: Path, image: str, docker_api: docker.APIClient
) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.base_url) as client:
            runs = [start(client, image=image, command=SLEEPER) for _ in range(2)]
            for run in runs:
                wait_running(client, run["id"])
            received: dict[str, list[Event]] = {}

            def watch(run_id: str, url: str) -> None:
                with httpx.Client(base_url=server.base_url) as own:
                    received[run_id] = collect(own, url, timeout=60)

            watchers = [
                threading.Thread(target=watch, args=(r["id"], r["links"]["events"])) for r in runs
            ]
            for w in watchers:
                w.start()
            time.sleep(0.5)
            assert server.terminate(60) == 0
            for w in watchers:
                w.join(30)
        for run in runs:
            done = received[run["id"]][-1]
            assert done.type == "done"
            assert done.data["status"] == "canceled"
            assert done.data["error"]["message"] == "server shutting down"
            assert containers_of(docker_api, run["id"]) == []
    finally:
        server.stop()


def test_crash_leaves_runs_marked_interrupted_and_containers_removed(
    tmp_path: Path, image: str, docker_api: docker.APIClient
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    with httpx.Client(base_url=server.base_url) as client:
        run = start(client, image=image, command=SLEEPER)
        wait_running(client, run["id"])
        before = collect(client, run["links"]["events"], until="log")
    server.kill()
    assert len(containers_of(docker_api, run["id"])) == 1
    with ServerProcess(data) as server, httpx.Client(base_url=server.base_url) as client:
        record = client.get(run["links"]["self"]).json()
        assert record["status"] == "error"
        assert record["error"]["phase"] == "interrupted"
        events = collect(client, run["links"]["events"], headers={"Last-Event-ID": before[-1].id})
        assert events[-1].type == "done" and events[-1].data["error"]["phase"] == "interrupted"
        assert int(events[0].id) == int(before[-1].id) + 1
        deadline = time.monotonic() + 30
        while containers_of(docker_api, run["id"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert containers_of(docker_api, run["id"]) == []
