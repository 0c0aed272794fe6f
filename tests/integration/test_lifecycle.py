"""Restarts: replay survives, a crash is recovered (a running run followed
again), a graceful stop ends every run."""

from __future__ import annotations

import threading

import docker
import httpx

from tests.support.runs import SLEEPER, containers_of, run_to_end, start
from tests.support.server import ServerFactory
from tests.support.sse import Event
from tests.support.wait import DEADLINE, Deadline, collect, wait_for_status, wait_until


def raw(client: httpx.Client, url: str) -> bytes:
    with client.stream("GET", url) as response:
        return b"".join(
            block + b"\n\n"
            for block in b"".join(Deadline(f"the replay of {url}").chunks(response)).split(b"\n\n")
            if block and not block.startswith(b":")
        )


def test_replay_after_restart_is_byte_for_byte(server_factory: ServerFactory, image: str) -> None:
    server = server_factory()
    data = server.data_dir
    with server.client() as client:
        run, _ = run_to_end(
            client, image=image, command=["sh", "-c", "seq 1 1000; printf 'x\\r\\n\\xff'"]
        )
        live = raw(client, run["links"]["events"])
        logs = client.get(run["links"]["logs"]).text
    server.stop()
    with server_factory(data).client() as client:
        assert raw(client, run["links"]["events"]) == live
        assert client.get(run["links"]["logs"]).text == logs
        again = client.get(run["links"]["self"]).json()
        assert again == run
        assert client.get("/api/runs").json()["runs"][0]["id"] == run["id"]


def test_graceful_shutdown_cancels_runs_and_every_subscriber_gets_done(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    server = server_factory()
    with server.client() as client:
        runs = [start(client, image=image, command=SLEEPER) for _ in range(2)]
        for run in runs:
            wait_for_status(client, run["id"], "running")
        received: dict[str, list[Event]] = {}
        subscribed: dict[str, threading.Event] = {r["id"]: threading.Event() for r in runs}
        failures: list[BaseException] = []

        def watch(run_id: str, url: str) -> None:
            events: list[Event] = []
            try:
                with (
                    server.client() as own,
                    own.stream("GET", url) as response,
                ):
                    for event in Deadline(f"`done` on {url}").events(response):
                        events.append(event)
                        subscribed[run_id].set()
                        if event.type == "done":
                            break
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)
            finally:
                received[run_id] = events
                subscribed[run_id].set()

        watchers = [
            threading.Thread(target=watch, args=(r["id"], r["links"]["events"])) for r in runs
        ]
        for w in watchers:
            w.start()
        # Both subscribers are reading (each got its first event) before the stop.
        for run_id, event in subscribed.items():
            assert event.wait(DEADLINE), f"the subscriber of {run_id} got no event"
        assert not failures, failures
        assert server.terminate(DEADLINE) == 0
        for w in watchers:
            w.join(DEADLINE)
            assert not w.is_alive(), "a subscriber still reads after the server stopped"
    assert not failures, failures
    for run in runs:
        done = received[run["id"]][-1]
        assert done.type == "done"
        assert done.data["status"] == "canceled"
        assert done.data["error"]["message"] == "server shutting down"
        assert containers_of(docker_api, run["id"]) == []


def test_after_a_crash_a_running_run_is_followed_again_and_can_be_canceled(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    """(Re-attach in all its cases: test_reattach_restart.py.)"""
    server = server_factory()
    data = server.data_dir
    with server.client() as client:
        run = start(client, image=image, command=SLEEPER)
        wait_for_status(client, run["id"], "running")
        before = collect(client, run["links"]["events"], until="log")
    server.kill()
    assert len(containers_of(docker_api, run["id"])) == 1
    with server_factory(data).client() as client:
        url = run["links"]["events"]
        events = collect(client, url, headers={"Last-Event-ID": before[-1].id}, until="notice")
        assert int(events[0].id) == int(before[-1].id) + 1
        assert events[-1].data["message"] == "pullrun restarted: re-attached to its container"
        assert client.get(run["links"]["self"]).json()["status"] == "running"
        assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 202
        events = collect(client, url, headers={"Last-Event-ID": events[-1].id})
        assert events[-1].type == "done" and events[-1].data["status"] == "canceled"
        wait_until(
            lambda: containers_of(docker_api, run["id"]) == [],
            f"the restarted server to remove run {run['id']}'s container",
        )
