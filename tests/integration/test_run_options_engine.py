"""The docker-run options against the real server and engine: a named volume
shared by two runs, binds under an allowed path (read-only and read-write,
and one that does not exist), refused binds, networks and ports (422 before
anything exists), a network the test creates and allows, a port published on
127.0.0.1 and reached from here, and GPUs: refused by default and, allowed,
the request the engine gets and the error it gives without a GPU.

The engines here run with `--bridge=none`: the default network has only a
loopback, so the tests that need one create a bridge network of their own
(and remove it)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.runs import containers_of, run_to_end, start
from tests.support.server import ServerFactory
from tests.support.sse import log_lines
from tests.support.wait import collect, wait_until


def _name(what: str) -> str:
    return f"pullrun-test-{what}-{secrets.token_hex(4)}"


@pytest.fixture
def volume(docker_api: docker.APIClient) -> Iterator[str]:
    name = _name("vol")
    yield name
    for container in docker_api.containers(all=True, filters={"volume": name}):
        docker_api.remove_container(container["Id"], force=True)
    with contextlib.suppress(docker.errors.NotFound):
        docker_api.remove_volume(name)


@contextlib.contextmanager
def network(docker_api: docker.APIClient, *, internal: bool) -> Iterator[str]:
    name = _name("net")
    docker_api.create_network(name, driver="bridge", internal=internal)
    try:
        yield name
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_api.remove_network(name)


def refused(response: httpx.Response, field: str, setting: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [f["field"] for f in error["fields"]] == [field], error
    assert setting in error["fields"][0]["message"], error


def test_a_named_volume_is_shared_between_two_runs(
    client: httpx.Client, image: str, volume: str, docker_api: docker.APIClient
) -> None:
    writer, _ = run_to_end(
        client,
        image=image,
        command=["sh", "-c", "echo kept > /data/note"],
        volumes=[f"{volume}:/data"],
        auto_remove=False,
    )
    try:
        assert writer["status"] == "succeeded", writer["error"]
        assert writer["spec"]["volumes"] == [
            {"source": volume, "target": "/data", "read_only": False}
        ]
        mounts = docker_api.inspect_container(writer["container_id"])["HostConfig"]["Mounts"]
        assert mounts == [{"Type": "volume", "Source": volume, "Target": "/data"}]
    finally:
        client.delete(writer["links"]["self"])
    reader, events = run_to_end(
        client,
        image=image,
        command=["sh", "-c", "cat /data/note; touch /data/x 2>/dev/null || echo read-only"],
        volumes=[{"source": volume, "target": "/data", "read_only": True}],
    )
    assert reader["status"] == "succeeded", reader["error"]
    assert log_lines(events)[0] == "kept"
    assert log_lines(events)[-1] == "read-only"


def test_binds_only_under_an_allowed_path(
    server_factory: ServerFactory, image: str, tmp_path: Path, docker_api: docker.APIClient
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "in.txt").write_text("from the host\n")
    server = server_factory(allowed_bind_paths=str(allowed))
    with server.client() as client:
        # Read-only: the file is there, writing fails.
        ro, events = run_to_end(
            client,
            image=image,
            command=[
                "sh",
                "-c",
                "cat /in/in.txt; echo no 2>/dev/null > /in/out.txt || echo refused",
            ],
            volumes=[f"{allowed}:/in:ro"],
            auto_remove=False,
        )
        try:
            assert ro["status"] == "succeeded", ro["error"]
            assert log_lines(events)[0] == "from the host"
            assert log_lines(events)[-1] == "refused"
            host = docker_api.inspect_container(ro["container_id"])["HostConfig"]
            assert host["Mounts"] == [
                {"Type": "bind", "Source": str(allowed), "Target": "/in", "ReadOnly": True}
            ]
        finally:
            client.delete(ro["links"]["self"])
        assert not (allowed / "out.txt").exists()
        # Read-write, through a path that resolves under the allowed one.
        rw, _ = run_to_end(
            client,
            image=image,
            command=["sh", "-c", "echo written > /out/out.txt"],
            volumes=[{"source": f"{allowed}/./sub/..", "target": "/out"}],
        )
        assert rw["status"] == "succeeded", rw["error"]
        assert rw["spec"]["volumes"][0]["source"] == str(allowed)
        assert (allowed / "out.txt").read_text() == "written\n"
        # A path the policy allows but that does not exist: the engine's refusal.
        missing, _ = run_to_end(
            client, image=image, command=["true"], volumes=[f"{allowed}/missing:/m"]
        )
        assert missing["status"] == "error"
        assert missing["error"]["phase"] == "create"
        assert "does not exist" in missing["error"]["message"]
        assert not (allowed / "missing").exists()
        # Outside it, `..` or not: 422, and nothing of the run exists.
        before = client.get("/api/runs").json()["runs"]
        for source in (str(tmp_path), f"{allowed}/../", "/etc", f"{allowed}x"):
            response = client.post(
                "/api/runs", json={"image": image, "volumes": [f"{source}:/host:ro"]}
            )
            refused(response, "volumes", "PULLRUN_ALLOWED_BIND_PATHS")
        assert client.get("/api/runs").json()["runs"] == before


def test_without_allowed_bind_paths_no_bind_and_no_network_or_ports(
    client: httpx.Client, image: str, tmp_path: Path
) -> None:
    before = client.get("/api/runs").json()["runs"]
    for body, field, setting in (
        ({"volumes": [f"{tmp_path}:/host"]}, "volumes", "PULLRUN_ALLOWED_BIND_PATHS: none"),
        ({"network": "host"}, "network", "PULLRUN_ALLOWED_NETWORKS"),
        ({"ports": ["127.0.0.1::80"]}, "ports", "PULLRUN_ALLOW_PORTS"),
        ({"gpus": "all"}, "gpus", "PULLRUN_ALLOW_GPUS"),
    ):
        refused(client.post("/api/runs", json={"image": image, **body}), field, setting)
    assert client.get("/api/runs").json()["runs"] == before


def test_an_allowed_network_is_joined_another_is_refused(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    with network(docker_api, internal=True) as name:
        server = server_factory(allowed_networks=name)
        with server.client() as client:
            refused(
                client.post("/api/runs", json={"image": image, "network": "host"}),
                "network",
                f"PULLRUN_ALLOWED_NETWORKS: {name}",
            )
            run, events = run_to_end(
                client,
                image=image,
                command=["sh", "-c", "ip -o -4 addr show eth0 | wc -l"],
                network=name,
                auto_remove=False,
            )
            try:
                assert run["status"] == "succeeded", run["error"]
                assert run["spec"]["network"] == name
                info = docker_api.inspect_container(run["container_id"])
                assert info["HostConfig"]["NetworkMode"] == name
                assert list(info["NetworkSettings"]["Networks"]) == [name]
                assert log_lines(events) == ["1"]  # an address on the network
            finally:
                client.delete(run["links"]["self"])


def test_a_port_is_published_on_127_0_0_1_when_allowed(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    with network(docker_api, internal=False) as name:
        server = server_factory(allowed_networks=name, allow_ports="true")
        with server.client() as client:
            refused(
                client.post(
                    "/api/runs", json={"image": image, "network": name, "ports": ["0.0.0.0::80"]}
                ),
                "ports",
                "PULLRUN_ALLOWED_PORT_HOSTS: 127.0.0.1",
            )
            serve = "mkdir /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"
            run = start(
                client, image=image, command=["sh", "-c", serve], network=name, ports=["8080"]
            )
            try:
                container = wait_until(
                    lambda: [
                        c for c in containers_of(docker_api, run["id"]) if c["State"] == "running"
                    ],
                    "the server's container to run",
                )[0]
                host = docker_api.inspect_container(container["Id"])["HostConfig"]
                assert host["PortBindings"] == {
                    "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
                }
                [bound] = docker_api.port(container["Id"], 8080)
                assert bound["HostIp"] == "127.0.0.1"

                def fetched() -> str | None:
                    with contextlib.suppress(httpx.HTTPError):
                        answer = httpx.get(f"http://127.0.0.1:{bound['HostPort']}/", timeout=5)
                        if answer.status_code == 200:
                            return answer.text
                    return None

                assert wait_until(fetched, "the published port to answer") == "served\n"
            finally:
                client.post(f"{run['links']['self']}/cancel")
            events = collect(client, run["links"]["events"])
            assert events[-1].type == "done"


def test_gpus_when_allowed_reach_the_engine_which_says_it_has_none(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    # (Refused by default: test_without_allowed_bind_paths_no_bind_and_no_network_or_ports.)
    server = server_factory(allow_gpus="true")
    with server.client() as client:
        for gpus, count, ids in (("all", -1, None), ("device=0", 0, ["0"])):
            run, _ = run_to_end(client, image=image, command=["true"], gpus=gpus, auto_remove=False)
            try:
                assert run["spec"]["gpus"] == gpus
                assert run["status"] == "error"
                # An engine picks the device driver at create (newer) or at start (20.10).
                assert run["error"]["phase"] in ("create", "start"), run["error"]
                message = run["error"]["message"]
                assert 'could not select device driver "" with capabilities: [[gpu]]' in message
                if run["container_id"]:
                    host = docker_api.inspect_container(run["container_id"])["HostConfig"]
                    assert host["DeviceRequests"] == [
                        {
                            "Driver": "",
                            "Count": count,
                            "DeviceIDs": ids,
                            "Capabilities": [["gpu"]],
                            "Options": {},
                        }
                    ]
            finally:
                client.delete(run["links"]["self"])
            assert containers_of(docker_api, run["id"]) == []
