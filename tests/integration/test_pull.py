"""Pulls are read to the end, relayed message by message, and fail clearly."""

from __future__ import annotations

import docker
import httpx

from tests.support.runs import containers_of, remove_image, run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import collect, wait_until

RATE = 2 * 1024 * 1024  # the layers image is ~6 MiB: about 3 s of real Downloading


def test_multi_layer_pull_streams_real_progress(
    client: httpx.Client, registry: str, docker_api: docker.APIClient
) -> None:
    with ThrottleProxy(registry, rate=RATE) as proxy:
        ref = f"{proxy.address}/pullrun/layers:latest"
        remove_image(docker_api, ref)
        try:
            run, events = run_to_end(client, image=ref, command=["echo", "pulled"], pull="always")
        finally:
            remove_image(docker_api, ref)
    assert run["status"] == "succeeded", run["error"]
    pulls = [e.data for e in events if e.type == "pull"]
    downloading: dict[str, list[int]] = {}
    for data in pulls:
        if data["status"] == "Downloading":
            downloading.setdefault(data["layer"], []).append(data["current"])
    # At least one layer was seen at several different byte counts while downloading.
    assert any(len(set(values)) >= 2 for values in downloading.values()), downloading
    fractions = [d["overall"]["fraction"] for d in pulls]
    assert fractions == sorted(fractions), "fraction went backwards"
    assert all(f < 1 for f in fractions[:-1]) and fractions[-1] == 1
    last = pulls[-1]["overall"]
    assert last["layers_done"] == last["layers_total"] >= 4
    assert last["bytes_done"] == last["bytes_total"] > 5 * 1024 * 1024
    assert pulls[-1]["status"].startswith("Status: Downloaded newer image")
    # The pull was read to its end before the container was created.
    types = [e.type for e in events]
    creating = next(
        i for i, e in enumerate(events) if e.type == "status" and e.data["status"] == "creating"
    )
    assert "pull" not in types[creating:]
    assert run["pull"]["pulled"] is True and run["image_digest"].startswith("sha256:")
    assert run["durations"]["pull"] > 1.0


def test_missing_image_is_a_pull_error(
    client: httpx.Client, registry: str, docker_api: docker.APIClient
) -> None:
    run, events = run_to_end(client, image=f"{registry}/pullrun/no-such-image:latest")
    assert run["status"] == "error"
    assert run["error"]["phase"] == "pull"
    assert "not found" in run["error"]["message"] or "unknown" in run["error"]["message"]
    assert events[-1].data["error"] == run["error"]
    assert containers_of(docker_api, run["id"]) == []


def test_error_inside_the_pull_stream_ends_the_run(
    client: httpx.Client, broken_registry: str, docker_api: docker.APIClient
) -> None:
    ref = f"{broken_registry}/pullrun/broken:latest"
    remove_image(docker_api, ref)
    try:
        run, events = run_to_end(client, image=ref)
    finally:
        remove_image(docker_api, ref)  # should the pull have succeeded after all
    assert run["status"] == "error", run
    assert run["error"]["phase"] == "pull"
    pulls = [e.data for e in events if e.type == "pull"]
    assert pulls and pulls[-1].get("error") is True
    assert pulls[-1]["message"] == run["error"]["message"]
    assert "unknown blob" in run["error"]["message"] or "blob" in run["error"]["message"]
    assert all(not p.get("error") for p in pulls[:-1])
    assert containers_of(docker_api, run["id"]) == []
    assert not [e for e in events if e.type == "status" and e.data["status"] == "creating"]


def test_private_registry_with_right_and_wrong_credentials(
    server: ServerProcess,
    client: httpx.Client,
    auth_registry: dict[str, str],
    docker_api: docker.APIClient,
) -> None:
    ref = f"{auth_registry['host']}/pullrun/private:latest"
    secret = auth_registry["password"]
    remove_image(docker_api, ref)
    wrong, wrong_events = run_to_end(
        client,
        image=ref,
        command=["true"],
        registry_auth={"username": auth_registry["username"], "password": "not-the-password"},
    )
    assert wrong["status"] == "error" and wrong["error"]["phase"] == "pull"
    assert (
        "unauthorized" in wrong["error"]["message"].lower() or "auth" in wrong["error"]["message"]
    )
    try:
        right, right_events = run_to_end(
            client,
            image=ref,
            command=["echo", "private"],
            registry_auth={"username": auth_registry["username"], "password": secret},
        )
    finally:
        remove_image(docker_api, ref)
    assert right["status"] == "succeeded", right["error"]
    # Never stored, echoed or logged.
    for record, events in ((wrong, wrong_events), (right, right_events)):
        assert "registry_auth" not in record and "registry_auth" not in record["spec"]
        assert secret not in str(record)
        assert all(secret not in str(e.data) for e in events)
    assert secret not in server.log()
    listing = client.get("/api/runs").text
    assert secret not in listing
    db = (server.data_dir / "pullrun.db").read_bytes()
    assert secret.encode() not in db


def test_pull_policy_never_and_missing(
    client: httpx.Client, registry: str, image: str, docker_api: docker.APIClient
) -> None:
    ref = f"{registry}/pullrun/busybox:latest"
    remove_image(docker_api, ref)
    never, _ = run_to_end(client, image=ref, pull="never")
    assert never["status"] == "error" and never["error"]["phase"] == "pull"
    assert "never" in never["error"]["message"]
    present, events = run_to_end(client, image=image, command=["true"], pull="missing")
    assert present["status"] == "succeeded"
    assert not [e for e in events if e.type == "pull"]
    assert present["pull"] == {"policy": "missing", "pulled": False}


def test_stalled_pull_is_abandoned(
    server_factory: ServerFactory, registry: str, docker_api: docker.APIClient
) -> None:
    server = server_factory(pull_stall_timeout=3)
    with (
        ThrottleProxy(registry, rate=RATE, stall_after=1024 * 1024) as proxy,
        server.client() as client,
    ):
        ref = f"{proxy.address}/pullrun/layers:latest"
        remove_image(docker_api, ref)
        try:
            record = start(client, image=ref, pull="always")
            events = collect(client, record["links"]["events"])
        finally:
            proxy.release()
            remove_image(docker_api, ref)
    done = events[-1].data
    assert done["status"] == "error"
    assert done["error"]["phase"] == "pull"
    assert "no pull progress for 3s" in done["error"]["message"]
    assert any(e.type == "pull" for e in events)


def test_a_registry_that_goes_away_mid_pull_ends_the_run_in_pull_with_its_message(
    server_factory: ServerFactory, registry: str, docker_api: docker.APIClient
) -> None:
    """The registry (here a proxy in front of it) dies while layers download:
    the engine retries, then gives up inside the 200 stream; the run ends with
    `error`, phase `pull`, and the engine's words about the registry."""
    server = server_factory(pull_stall_timeout=120)
    with (
        ThrottleProxy(registry, rate=RATE, stall_after=1024 * 1024) as proxy,
        server.client() as client,
    ):
        ref = f"{proxy.address}/pullrun/layers:latest"
        remove_image(docker_api, ref)
        try:
            record = start(client, image=ref, pull="always")
            # Mid pull: a layer downloading (the "pulling" status alone comes
            # before the engine has said anything, and a cut then is no pull).
            wait_until(
                lambda: any(
                    layer["state"] == "downloading"
                    for layer in client.get(f"/api/runs/{record['id']}/snapshot").json()["layers"]
                ),
                "a layer downloading",
            )
            proxy.stop()  # gone: open connections cut, new ones refused
            events = collect(client, record["links"]["events"])
        finally:
            remove_image(docker_api, ref)
    done = events[-1].data
    assert done["status"] == "error", done
    assert done["error"]["phase"] == "pull"
    message = done["error"]["message"]
    assert proxy.address.split(":")[-1] in message or "connection" in message.lower(), message
    assert any(e.type == "pull" for e in events)
