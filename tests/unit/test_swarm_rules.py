"""Swarm runs without a cluster: the task template a run becomes, constraint
rules (the request's, the policy's, the engines file's), placement onto swarm
engines, and how a task's log stream is ended once the task has."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.engines import EngineConfig, EnginesFileError, load_engines
from backend.engines.pool import EngineHandle
from backend.engines.swarm import task_template
from backend.errors import PolicyViolation
from backend.models import RunCreate, RunSpec
from backend.runs.placement import candidates, check_placeable
from backend.runs.policy import apply_policy
from backend.runs.swarm import EndsWhenQuiet
from backend.settings import Settings


def test_a_run_becomes_a_one_task_job_with_its_limits_and_labels() -> None:
    spec = RunSpec(
        image="127.0.0.1:5000/pullrun/busybox:latest",
        command=["sh", "-c", "echo hi"],
        env={"A": "1"},
        workdir="/tmp",
        user="1000",
        memory="256m",
        cpus=0.5,
        pids_limit=64,
        labels={"team": "x"},
        platform="linux/arm64",
        constraints=["node.labels.pool==batch"],
    )
    template = task_template(
        "abc123",
        spec,
        constraints=["node.role==worker"],
        preferences=["spread=node.labels.zone"],
        no_new_privileges=True,
    )
    container = template["ContainerSpec"]
    assert container["Args"] == ["sh", "-c", "echo hi"] and "Command" not in container
    assert container["Env"] == ["A=1"]
    assert (container["Dir"], container["User"]) == ("/tmp", "1000")
    assert container["Labels"] == {
        "team": "x",
        "pullrun.run": "abc123",
        "pullrun.managed": "true",
    }
    limits = template["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 500_000_000, "MemoryBytes": 256 * 1024**2, "Pids": 64}
    assert template["Resources"]["Reservations"] == {
        "NanoCPUs": 500_000_000,
        "MemoryBytes": 256 * 1024**2,
    }
    assert template["RestartPolicy"]["Condition"] == "none"
    placement = template["Placement"]
    assert placement["Constraints"] == ["node.role==worker", "node.labels.pool==batch"]
    assert placement["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    assert placement["Platforms"] == [{"OS": "linux", "Architecture": "arm64"}]


def test_an_entrypoint_override_is_the_tasks_command() -> None:
    spec = RunSpec(image="busybox", entrypoint=["/bin/sh"], command=["-c", "true"])
    container = task_template("r", spec, constraints=[], preferences=[], no_new_privileges=True)[
        "ContainerSpec"
    ]
    assert (container["Command"], container["Args"]) == (["/bin/sh"], ["-c", "true"])


@pytest.mark.parametrize(
    "constraint",
    ["node.labels.pool==batch", "node.platform.arch!=aarch64", "engine.labels.gpu == true"],
)
def test_swarm_constraints_are_accepted(constraint: str) -> None:
    assert RunCreate(image="busybox", constraints=[constraint]).constraints == [constraint]


@pytest.mark.parametrize(
    "constraint",
    ["node.labels.pool=batch", "rm -rf /", "node.labels.==x", "container.id==1", "node.role==a b"],
)
def test_anything_else_is_422_naming_the_constraint(constraint: str) -> None:
    with pytest.raises(ValidationError, match="is not a swarm constraint"):
        RunCreate(image="busybox", constraints=[constraint])


def test_the_policy_allows_only_the_listed_constraints(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, allowed_constraints=["node.labels.pool==*"])
    ok = RunCreate(image="busybox", constraints=["node.labels.pool==batch"])
    assert apply_policy(ok, settings).constraints == ["node.labels.pool==batch"]
    with pytest.raises(PolicyViolation, match="PULLRUN_ALLOWED_CONSTRAINTS"):
        apply_policy(RunCreate(image="busybox", constraints=["node.role==manager"]), settings)
    closed = Settings(data_dir=tmp_path, allowed_constraints=[])
    with pytest.raises(PolicyViolation, match="not allowed"):
        apply_policy(ok, closed)


def test_the_engines_file_takes_swarm_placement_for_swarm_engines_only(tmp_path: Path) -> None:
    path = tmp_path / "engines.toml"
    path.write_text(
        '[engines.cluster]\nkind = "swarm"\nhost = "unix:///x.sock"\n'
        'placement_constraints = ["node.labels.pool==batch"]\n'
        'placement_preferences = ["spread=node.labels.zone"]\n'
    )
    [cluster] = load_engines(path, default_slots=4)
    assert cluster.kind == "swarm" and cluster.placement_constraints == ["node.labels.pool==batch"]
    path.write_text(
        '[engines.one]\nhost = "unix:///x.sock"\nplacement_constraints = ["node.role==worker"]\n'
    )
    with pytest.raises(EnginesFileError, match='need kind = "swarm"'):
        load_engines(path, default_slots=4)
    path.write_text('[engines.c]\nkind = "swarm"\nplacement_constraints = ["nope"]\n')
    with pytest.raises(EnginesFileError, match="'nope' is not a swarm constraint"):
        load_engines(path, default_slots=4)


def _handle(name: str, kind: str) -> EngineHandle:
    handle = EngineHandle(EngineConfig(name=name, kind=kind), lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    handle.state, handle.os, handle.arch, handle.cpus = "up", "linux", "amd64", 2
    return handle


def test_runs_with_constraints_go_to_swarm_engines_and_the_cluster_judges_platform() -> None:
    local, cluster = _handle("local", "docker"), _handle("cluster", "swarm")
    pool = [local, cluster]
    constrained = RunSpec(image="busybox", constraints=["node.labels.pool==batch"])
    assert candidates(pool, constrained) == [cluster]
    arm = RunSpec(image="busybox", platform="linux/arm64")
    assert candidates(pool, arm) == [cluster]  # its nodes may be arm64; it decides
    big = RunSpec(image="busybox", cpus=64)
    assert candidates(pool, big) == [cluster]


def test_constraints_without_a_swarm_engine_are_422(tmp_path: Path) -> None:
    class Pool(list[EngineHandle]):
        def get(self, name: str | None) -> EngineHandle | None:
            return next((h for h in self if h.name == name), None)

    pool = Pool([_handle("local", "docker")])
    with pytest.raises(PolicyViolation) as caught:
        check_placeable(pool, RunSpec(image="busybox", constraints=["node.role==worker"]))  # type: ignore[arg-type]
    assert caught.value.fields[0]["field"] == "constraints"


class Chunks:
    """An output stream that hands over what the test puts, else waits."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.cond = threading.Condition()
        self.closed = False

    def put(self, data: bytes) -> None:
        with self.cond:
            self.chunks.append(data)
            self.cond.notify_all()

    def read(self, timeout: float | None) -> bytes | None:
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.chunks), timeout):
                return None
            return self.chunks.pop(0)

    def close(self) -> None:
        self.closed = True


def test_a_task_log_stream_ends_at_its_first_quiet_moment_once_the_task_ended() -> None:
    source, ended = Chunks(), threading.Event()
    stream = EndsWhenQuiet(source, ended)
    source.put(b"a")
    assert stream.read(None) == b"a"
    assert stream.read(0.01) is None  # quiet, but the task goes on: no end
    ended.set()
    source.put(b"last")
    assert stream.read(None) == b"last"  # what was still coming is read
    assert stream.read(None) == b""  # then quiet: the end
    stream.close()
    assert source.closed


def test_secret_env_never_goes_to_a_swarm(tmp_path: Path) -> None:
    class Pool(list[EngineHandle]):
        def get(self, name: str | None) -> EngineHandle | None:
            return next((h for h in self if h.name == name), None)

    local, cluster = _handle("local", "docker"), _handle("cluster", "swarm")
    secret = RunSpec(image="busybox", secret_env={"TOKEN": "***"})
    assert candidates([local, cluster], secret) == [local]
    with pytest.raises(PolicyViolation) as caught:
        check_placeable(Pool([cluster]), secret)  # type: ignore[arg-type]
    assert caught.value.fields[0]["field"] == "secret_env"
    assert "docker service inspect" in caught.value.fields[0]["message"]
