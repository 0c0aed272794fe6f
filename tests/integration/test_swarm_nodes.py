"""A swarm run and its node's own engine (backend/runs/swarm.py): the pull
progress and the OOM fact that only the node's engine has, and a node that
dies under its task.

Every run is pinned to the swarm engine `cluster` and constrained to the
worker node (`node.labels.pullrun.node==swarm2`, scripts/swarm.sh). Two
servers serve the module: `nodes_server`, whose engines file also names the
worker's dockerd as the docker engine `worker`, and `cluster_server`, whose
engines file names the cluster alone. The last test kills the worker's dockerd
(its pidfile) and brings it back with scripts/swarm.sh, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.support.engines import dockerd_pid, wait_for_engine, write_engines_file
from tests.support.runs import run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.sse import Event, log_lines
from tests.support.swarm import ENGINE, Swarm
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import TERMINAL, Deadline, collect, wait_for_status, wait_until

WORKER = "worker"  # the worker's dockerd, as a docker engine of the engines file
ON_WORKER = "node.labels.pullrun.node==swarm2"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# The layers only this module's image has: their bytes are downloaded for real
# whatever the worker holds already. Through the proxy at RATE the node's pull
# takes seconds; pullrun's own pull joins it at its first look at the task.
FRESH_LAYERS = (2 << 20, 2 << 20)
RATE = 3 << 19  # 1.5 MiB/s
# Grows past an 8 MiB limit: a 32 MiB shell variable.
GREEDY = ["sh", "-c", "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo ${#x}"]
TICKER = ["sh", "-c", "i=0; while true; do i=$((i + 1)); echo tick $i; sleep 0.1; done"]
NODE_DOWN_DEADLINE = 60.0  # seconds for the run to end once its node is killed
RESTART_TIMEOUT = 180  # seconds for scripts/swarm.sh start (each of its waits is shorter)


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    found = Swarm.from_env()
    if found is None or found.worker is None:
        pytest.skip("no two-node swarm: PULLRUN_TEST_SWARM_WORKER_HOST is not set (make engines)")
    return found


@pytest.fixture(scope="module")
def busybox(registry: str) -> str:
    return f"{registry}/pullrun/busybox:latest"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("server") / "data")
    try:
        yield factory
    finally:
        factory.stop_all()


def serve(servers: ServerFactory, path: Path, tables: dict[str, dict[str, Any]]) -> ServerProcess:
    return servers(
        engines_file=write_engines_file(path, tables),
        engine_check_interval=1,
        allowed_constraints="node.labels.*",
    )


@pytest.fixture(scope="module")
def nodes_server(
    swarm: Swarm, servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """The cluster, and the worker's engine beside it (the node's own)."""
    tables: dict[str, dict[str, Any]] = {
        ENGINE: {"kind": "swarm", "host": swarm.manager, "max_concurrent_runs": 4},
        WORKER: {"host": swarm.worker, "max_concurrent_runs": 4},
    }
    server = serve(servers, tmp_path_factory.mktemp("nodes") / "engines.toml", tables)
    with server.client() as client:
        wait_for_engine(client, WORKER, "up")
        wait_for_engine(client, ENGINE, "up")
    return server


@pytest.fixture(scope="module")
def cluster_server(
    swarm: Swarm, servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """The cluster alone: no node's engine is known."""
    tables = {ENGINE: {"kind": "swarm", "host": swarm.manager, "max_concurrent_runs": 4}}
    server = serve(servers, tmp_path_factory.mktemp("cluster") / "engines.toml", tables)
    with server.client() as client:
        wait_for_engine(client, ENGINE, "up")
    return server


def notices(events: list[Event]) -> list[str]:
    return [e.data["message"] for e in events if e.type == "notice"]


def statuses(events: list[Event]) -> list[str]:
    return [e.data["status"] for e in events if e.type == "status"]


def registry_http() -> httpx.Client:
    return httpx.Client(timeout=30, trust_env=False)  # no proxy between us and 127.0.0.1


def manifest_digest(registry: str, repository: str) -> str | None:
    with registry_http() as http:
        response = http.head(
            f"http://{registry}/v2/{repository}/manifests/latest", headers={"Accept": MANIFEST_V2}
        )
    return response.headers.get("docker-content-digest") if response.status_code == 200 else None


def build_context(base: str) -> io.BytesIO:
    """FROM `base`, then one COPY per FRESH_LAYERS of that many random bytes."""
    dockerfile = f"FROM {base}\n" + "".join(
        f"COPY fresh{i} /fresh{i}\n" for i in range(len(FRESH_LAYERS))
    )
    files = {"Dockerfile": dockerfile.encode()}
    files.update({f"fresh{i}": os.urandom(size) for i, size in enumerate(FRESH_LAYERS)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture
def fresh_image(docker_api: docker.APIClient, registry: str, image: str) -> Iterator[str]:
    """A repository of the registry that only this test pulls: busybox and
    FRESH_LAYERS random layers. Built on the local engine and pushed; the
    local image removed at once, the registry's tag at the end."""
    repository = f"pullrun/node-pull-{secrets.token_hex(4)}"
    ref = f"{registry}/{repository}:latest"
    try:
        for line in docker_api.build(
            fileobj=build_context(image), custom_context=True, tag=ref, rm=True, decode=True
        ):
            assert "error" not in line, line
        for line in docker_api.push(f"{registry}/{repository}", "latest", stream=True, decode=True):
            assert "error" not in line, line
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_api.remove_image(ref, force=True)
    try:
        yield repository
    finally:
        digest = manifest_digest(registry, repository)
        if digest:
            with registry_http() as http:
                http.delete(f"http://{registry}/v2/{repository}/manifests/{digest}")


# -- pull progress from the node's own engine ---------------------------------------------


def test_the_nodes_own_engine_shows_the_pull_layer_by_layer(
    swarm: Swarm, nodes_server: ServerProcess, registry: str, fresh_image: str
) -> None:
    with ThrottleProxy(registry, rate=RATE) as proxy:
        ref = f"{proxy.address}/{fresh_image}:latest"
        try:
            with nodes_server.client() as client:
                run, events = run_to_end(
                    client,
                    image=ref,
                    command=["echo", "pulled"],
                    engine=ENGINE,
                    constraints=[ON_WORKER],
                )
            swarm.wait_gone(run["id"])
        finally:
            swarm.remove_image(ref)
    assert run["status"] == "succeeded", run["error"]
    assert log_lines(events) == ["pulled"]
    assert statuses(events) == ["queued", "pulling", "starting", "running"], statuses(events)
    said = f"swarm: the node pulls the image; progress from engine {WORKER}"
    assert said in notices(events), notices(events)
    # The notice comes first, then the worker's own pull messages, in the pull phase.
    first_pull = [e.type for e in events].index("pull")
    assert events[first_pull - 1].data == {"message": said}
    pulls = [e.data for e in events if e.type == "pull"]
    assert statuses(events[:first_pull])[-1] == "pulling", statuses(events[:first_pull])
    # Per layer: bytes of a known total, for each of the fresh layers at least.
    downloading = [p for p in pulls if p["status"] == "Downloading" and p["layer"]]
    assert len({p["layer"] for p in downloading}) >= len(FRESH_LAYERS), pulls
    assert all(p["total"] and 0 < p["current"] <= p["total"] for p in downloading), downloading
    fractions = [p["overall"]["fraction"] for p in pulls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    # The task's own pull and ours share the engine's one download; whichever
    # tags the image first says "Downloaded newer image", the other "up to date".
    last = pulls[-1]["status"]
    assert last.startswith(("Status: Downloaded newer image", "Status: Image is up to date")), last
    # The record's summary says the node's engine pulled it, as far as it knows.
    summary = run["pull"]
    assert summary["pulled"] is True and summary["policy"] == "missing", summary
    assert summary["digest"] == manifest_digest(registry, fresh_image), summary
    assert summary["layers_total"] == 1 + len(FRESH_LAYERS), summary
    assert summary["bytes_total"] >= sum(FRESH_LAYERS), summary


# -- OOM ------------------------------------------------------------------------------------


def oom_events(swarm: Swarm, run_id: str, since: float) -> list[dict[str, Any]]:
    """The worker engine's own `oom` events of the run's container (ground truth)."""
    assert swarm.worker is not None
    with docker.APIClient(base_url=swarm.worker, version="auto") as api:
        return list(
            api.events(
                since=int(since) - 1,
                until=int(time.time()) + 1,
                filters={"type": "container", "event": "oom", "label": f"pullrun.run={run_id}"},
                decode=True,
            )
        )


@pytest.mark.parametrize("server_name", ["nodes_server", "cluster_server"])
def test_oom_is_told_only_by_the_nodes_own_engine(
    server_name: str, swarm: Swarm, busybox: str, request: pytest.FixtureRequest
) -> None:
    server: ServerProcess = request.getfixturevalue(server_name)
    since = time.time()
    with server.client() as client:
        run, events = run_to_end(
            client,
            image=busybox,
            command=GREEDY,
            engine=ENGINE,
            constraints=[ON_WORKER],
            memory="8m",
        )
    swarm.wait_gone(run["id"])
    assert run["status"] == "failed", run
    assert run["exit_code"] == 137 and run["error"] is None, run
    assert events[-1].data["exit_code"] == 137
    assert oom_events(swarm, run["id"], since), "the worker saw no OOM kill of the run's container"
    # Known from the worker's engine; with the cluster alone, not guessed from 137.
    assert run["oom_killed"] is (server_name == "nodes_server"), run


# -- a node that dies under its task --------------------------------------------------------


def worker_pidfile() -> Path:
    path = os.environ.get("PULLRUN_TEST_SWARM_WORKER_PIDFILE")
    if not path:
        pytest.skip("PULLRUN_TEST_SWARM_WORKER_PIDFILE is not set (scripts/test-env.sh)")
    return Path(path)


def swarm_script() -> Path:
    path = os.environ.get("PULLRUN_TEST_SWARM_SCRIPT")
    if not path:
        pytest.skip("PULLRUN_TEST_SWARM_SCRIPT is not set (scripts/test-env.sh)")
    return Path(path)


def nodes_ready(client: httpx.Client, count: int) -> list[dict[str, Any]] | None:
    views = {v["name"]: v for v in client.get("/api/engines").json()["engines"]}
    nodes: list[dict[str, Any]] = views[ENGINE].get("nodes") or []
    ready = [n for n in nodes if n["state"] == "ready" and n["availability"] == "active"]
    return nodes if len(nodes) == count and len(ready) == count else None


@contextlib.contextmanager
def worker_restored(client: httpx.Client) -> Iterator[None]:
    """Whatever the test did to the worker's dockerd, it runs again afterwards
    (scripts/swarm.sh start: the node comes back into the swarm, or joins it
    anew), and /api/engines sees both nodes ready."""
    pidfile, script = worker_pidfile(), swarm_script()
    try:
        yield
    finally:
        if dockerd_pid(pidfile) is None:
            done = subprocess.run(
                [str(script), "start"],
                capture_output=True,
                text=True,
                timeout=RESTART_TIMEOUT,
                check=False,
            )
            assert done.returncode == 0, f"swarm.sh start: exit {done.returncode}: {done.stderr}"
        wait_until(lambda: nodes_ready(client, 2), "/api/engines to show both nodes ready")


def test_a_node_that_dies_under_its_task_ends_the_run_with_error(
    swarm: Swarm, cluster_server: ServerProcess, busybox: str
) -> None:
    pidfile = worker_pidfile()
    with cluster_server.client() as client, worker_restored(client):
        assert nodes_ready(client, 2), "the swarm is not whole to begin with"
        record = start(
            client, image=busybox, command=TICKER, engine=ENGINE, constraints=[ON_WORKER]
        )
        try:
            url = record["links"]["events"]
            with client.stream("GET", url) as response:
                for event in Deadline(f"a line of {url}").events(response):
                    if event.type == "log":
                        break
            pid = dockerd_pid(pidfile)
            assert pid is not None, f"the worker's dockerd is not running ({pidfile})"
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: dockerd_pid(pidfile) is None, f"dockerd pid {pid} to die")

            # The manager marks the node down after its heartbeat timeout (~15 s).
            ended = wait_for_status(client, record["id"], TERMINAL, timeout=NODE_DOWN_DEADLINE)
        finally:
            if client.get(record["links"]["self"]).json()["status"] not in TERMINAL:
                client.post(f"/api/runs/{record['id']}/cancel")
        assert ended["status"] == "error", ended
        error = ended["error"]
        assert error["phase"] == "run", error
        assert error["message"].startswith("swarm: node ") and "down" in error["message"], error
        events = collect(client, url)
        assert events[-1].data["error"] == error
        # What the task printed until its node died, each line once, in order.
        lines = log_lines(events)
        assert lines and lines == [f"tick {i}" for i in range(1, len(lines) + 1)], lines
    swarm.tidy(record["id"])
    swarm.wait_gone(record["id"])
