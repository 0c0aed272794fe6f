"""The docker-run options (`volumes`, `network`, `ports`, `gpus`): their shapes
and input limits, the run policy over them (422 naming the setting), what
reaches the engine (HostConfig keys), swarm engines refusing them, the form's
"Run again" text, and an in-process request refused before anything exists.
tests/integration/test_run_options_engine.py does the same against the real
server and engine."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backend.engines import EngineConfig
from backend.engines.fake import FakeDocker
from backend.engines.pool import EngineHandle
from backend.errors import PolicyViolation
from backend.models import RunCreate, RunSpec
from backend.run_options import (
    MAX_PORTS,
    MAX_VOLUMES,
    host_config_options,
    port_text,
    volume_text,
)
from backend.runs.placement import candidates, check_placeable
from backend.runs.policy import apply_policy
from backend.settings import Settings
from backend.web.app import create_app
from backend.web.pages import prefill
from tests.unit.conftest import BASE, bearer, make_token


def request(**fields: Any) -> RunCreate:
    return RunCreate(image="busybox", **fields)


def refused(req: RunCreate, settings: Settings) -> list[dict[str, str]]:
    with pytest.raises(PolicyViolation) as caught:
        apply_policy(req, settings)
    return caught.value.fields


# -- shapes -----------------------------------------------------------------------------


def test_docker_strings_become_objects() -> None:
    req = request(
        volumes=["cache:/cache", "/srv/data:/data:ro", "/srv/out:/out:rw"],
        ports=["8080:80", "127.0.0.1::53/udp", "[::1]:9000:90", 7000],
        gpus=2,
    )
    assert [v.model_dump() for v in req.volumes] == [
        {"source": "cache", "target": "/cache", "read_only": False},
        {"source": "/srv/data", "target": "/data", "read_only": True},
        {"source": "/srv/out", "target": "/out", "read_only": False},
    ]
    assert [p.model_dump() for p in req.ports] == [
        {"container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1", "protocol": "tcp"},
        {"container_port": 53, "host_port": None, "host_ip": "127.0.0.1", "protocol": "udp"},
        {"container_port": 90, "host_port": 9000, "host_ip": "::1", "protocol": "tcp"},
        {"container_port": 7000, "host_port": None, "host_ip": "127.0.0.1", "protocol": "tcp"},
    ]
    assert req.gpus == "2"
    # The form writes them back as docker's strings, and they read the same.
    again = request(
        volumes=[volume_text(v) for v in req.volumes], ports=[port_text(p) for p in req.ports]
    )
    assert again.volumes == req.volumes and again.ports == req.ports


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"volumes": ["data"]}, "volumes"),
        ({"volumes": ["a:b:c:d"]}, "volumes"),
        ({"volumes": [{"source": "data", "target": "relative"}]}, "volumes"),
        ({"volumes": [{"source": "-bad", "target": "/x"}]}, "volumes"),
        ({"volumes": [{"source": "x", "target": "/x"}]}, "volumes"),  # one character
        ({"volumes": [{"source": "/a\nb", "target": "/x"}]}, "volumes"),
        ({"volumes": [{"source": "/" + "a" * 5000, "target": "/x"}]}, "volumes"),
        ({"volumes": [{"source": "v1", "target": "/x", "mode": "z"}]}, "volumes"),
        ({"volumes": [f"v{i}:/d{i}" for i in range(MAX_VOLUMES + 1)]}, "volumes"),
        ({"ports": ["80:80:80:80"]}, "ports"),
        ({"ports": ["0:80"]}, "ports"),
        ({"ports": ["70000"]}, "ports"),
        ({"ports": ["80/sctp"]}, "ports"),
        ({"ports": [{"container_port": 80, "host_ip": "localhost"}]}, "ports"),
        ({"ports": ["8080:80", "8080:81"]}, "ports"),
        ({"ports": [str(1000 + i) for i in range(MAX_PORTS + 1)]}, "ports"),
        ({"network": "container:abc"}, "network"),
        ({"network": "a b"}, "network"),
        ({"network": "n" * 200}, "network"),
        ({"gpus": "some"}, "gpus"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": "device="}, "gpus"),
        ({"gpus": True}, "gpus"),
    ],
)
def test_malformed_options_are_422_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request(**fields)
    assert {str(e["loc"][0]) for e in caught.value.errors()} == {field}


# -- the policy -------------------------------------------------------------------------


def test_named_volumes_are_always_allowed_binds_only_under_an_allowed_path() -> None:
    settings = Settings()
    named = apply_policy(request(volumes=["cache:/cache:ro"]), settings)
    assert named.volumes[0].source == "cache" and named.volumes[0].read_only
    fields = refused(request(volumes=["/srv/data:/data"]), settings)
    assert fields[0]["field"] == "volumes"
    assert "PULLRUN_ALLOWED_BIND_PATHS: none" in fields[0]["message"]

    allowing = Settings(allowed_bind_paths="/srv/data, /opt/shared/")
    for source, kept in [
        ("/srv/data", "/srv/data"),
        ("/srv/data/sub/", "/srv/data/sub"),
        ("//srv/./data//x", "/srv/data/x"),
        ("/opt/shared/a", "/opt/shared/a"),
    ]:
        got = apply_policy(request(volumes=[f"{source}:/data:ro"]), allowing)
        assert got.volumes[0].source == kept
    for source in ["/srv/data/../../etc", "/srv/database", "/srv", "/", "/srv/data/../x"]:
        fields = refused(request(volumes=[{"source": source, "target": "/d"}]), allowing)
        assert "PULLRUN_ALLOWED_BIND_PATHS: /srv/data, /opt/shared" in fields[0]["message"]


def test_bind_paths_must_be_absolute() -> None:
    with pytest.raises(ValidationError):
        Settings(allowed_bind_paths="srv/data")


@pytest.mark.parametrize(
    "target", ["/", "/proc", "/proc/sys", "//proc/.", "/tmp/../proc/1", "/x/.."]
)
def test_a_target_of_root_or_under_proc_is_refused(target: str) -> None:
    fields = refused(request(volumes=[{"source": "v1", "target": target}]), Settings())
    assert fields[0]["field"] == "volumes" and "/proc" in fields[0]["message"]


def test_a_target_given_twice_is_refused_and_targets_are_kept_resolved() -> None:
    fields = refused(request(volumes=["v1:/data", "v2:/data/./"]), Settings())
    assert "given twice" in fields[0]["message"]
    got = apply_policy(request(volumes=["v1:/data/x/../y/"]), Settings())
    assert got.volumes[0].target == "/data/y"


def test_networks_only_from_the_allowed_list() -> None:
    assert apply_policy(request(), Settings()).network is None  # the engine's default
    fields = refused(request(network="host"), Settings())
    assert fields == [
        {
            "field": "network",
            "message": "network 'host' is not allowed "
            "(PULLRUN_ALLOWED_NETWORKS: none: only the engine's default)",
        }
    ]
    settings = Settings(allowed_networks='["jobs", "host"]')
    assert apply_policy(request(network="jobs"), settings).network == "jobs"
    assert (
        "PULLRUN_ALLOWED_NETWORKS: jobs, host"
        in refused(request(network="Jobs"), settings)[0]["message"]
    )


def test_ports_only_when_allowed_and_only_on_allowed_addresses() -> None:
    fields = refused(request(ports=["8080:80"]), Settings())
    assert fields == [
        {"field": "ports", "message": "publishing ports is not allowed (PULLRUN_ALLOW_PORTS)"}
    ]
    on = Settings(allow_ports=True)
    assert apply_policy(request(ports=["80", "127.0.0.1:8080:80"]), on).ports[1].host_port == 8080
    for elsewhere in ["0.0.0.0:8080:80", "[::]:8080:80", "10.0.0.1::80"]:
        message = refused(request(ports=[elsewhere]), on)[0]["message"]
        assert "PULLRUN_ALLOWED_PORT_HOSTS: 127.0.0.1" in message
    anywhere = Settings(allow_ports=True, allowed_port_hosts="127.0.0.1,0.0.0.0")
    assert apply_policy(request(ports=["0.0.0.0:8080:80"]), anywhere).ports[0].host_ip == "0.0.0.0"


def test_gpus_only_when_allowed() -> None:
    fields = refused(request(gpus="all"), Settings())
    assert fields == [{"field": "gpus", "message": "GPUs are not allowed (PULLRUN_ALLOW_GPUS)"}]
    assert apply_policy(request(gpus="all"), Settings(allow_gpus=True)).gpus == "all"


def test_every_refusal_is_named_at_once() -> None:
    fields = refused(
        request(volumes=["/etc:/etc"], network="host", ports=["80"], gpus="all"), Settings()
    )
    assert [f["field"] for f in fields] == ["volumes", "network", "ports", "gpus"]


# -- what reaches the engine -------------------------------------------------------------


def test_host_config_keys_are_what_the_docker_cli_sends() -> None:
    req = request(
        volumes=["cache:/cache", "/srv/data:/data:ro"],
        network="jobs",
        ports=["127.0.0.1::80", "8053:53/udp"],
        gpus="device=0,GPU-3a1f",
    )
    assert host_config_options(req.volumes, req.network, req.ports, req.gpus) == {
        "Mounts": [
            {"Type": "volume", "Source": "cache", "Target": "/cache", "ReadOnly": False},
            {"Type": "bind", "Source": "/srv/data", "Target": "/data", "ReadOnly": True},
        ],
        "NetworkMode": "jobs",
        "PortBindings": {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "8053"}],
        },
        "DeviceRequests": [
            {
                "Driver": "",
                "Count": 0,
                "DeviceIDs": ["0", "GPU-3a1f"],
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        ],
    }
    for gpus, count in [("all", -1), ("3", 3)]:
        [asked] = host_config_options([], None, [], gpus)["DeviceRequests"]
        assert asked["Count"] == count and asked["DeviceIDs"] is None
    assert host_config_options([], None, [], None) == {}


# -- swarm engines -----------------------------------------------------------------------


def _handle(name: str, kind: str) -> EngineHandle:
    handle = EngineHandle(EngineConfig(name=name, kind=kind), lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    handle.state, handle.os, handle.arch, handle.cpus = "up", "linux", "amd64", 2
    return handle


class _Pool(list[EngineHandle]):
    def get(self, name: str | None) -> EngineHandle | None:
        return next((h for h in self if h.name == name), None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"volumes": ["v1:/d"]}, "volumes"),
        ({"network": "jobs"}, "network"),
        ({"ports": ["80"]}, "ports"),
        ({"gpus": "all"}, "gpus"),
    ],
)
def test_a_swarm_engine_takes_no_docker_run_option(fields: dict[str, Any], field: str) -> None:
    local, cluster = _handle("local", "docker"), _handle("cluster", "swarm")
    spec = RunSpec(image="busybox", **fields)
    assert candidates([local, cluster], spec) == [local]
    check_placeable(_Pool([local, cluster]), spec)  # type: ignore[arg-type]
    with pytest.raises(PolicyViolation) as caught:
        check_placeable(_Pool([cluster]), spec)  # type: ignore[arg-type]
    assert caught.value.fields[0]["field"] == field
    assert "not on a swarm engine" in caught.value.fields[0]["message"]


# -- the form ----------------------------------------------------------------------------


def test_run_again_refills_the_options() -> None:
    spec = RunSpec(
        image="busybox",
        volumes=["cache:/cache", "/srv/data:/data:ro"],
        network="jobs",
        ports=["127.0.0.1:8080:80", "[::1]::53/udp"],
        gpus="all",
    )
    form = prefill(spec)
    assert form["volumes"] == "cache:/cache\n/srv/data:/data:ro"
    assert form["ports"] == "127.0.0.1:8080:80\n[::1]::53/udp"
    assert (form["network"], form["gpus"]) == ("jobs", "all")
    assert prefill(RunSpec(image="busybox"))["volumes"] == ""


# -- in-process: refused before anything of the run exists --------------------------------


def test_a_refused_option_is_422_and_leaves_nothing(settings: Settings, daemon: FakeDocker) -> None:
    app = create_app(settings, engine_factory=daemon)
    with TestClient(app, headers=bearer(make_token(settings, "op", "operator"))) as client:
        for body in (
            {"volumes": ["/etc:/host-etc:ro"]},
            {"network": "host"},
            {"ports": ["8080:80"]},
            {"gpus": "all"},
        ):
            response = client.post("/api/runs", json={"image": BASE, **body})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["fields"][0]["field"] == next(iter(body))
            assert "PULLRUN_" in error["fields"][0]["message"]
        assert client.get("/api/runs").json()["runs"] == []
        assert not settings.events_dir.exists() or list(settings.events_dir.iterdir()) == []
        assert [c.op for c in daemon.calls if c.op != "version"] == []
