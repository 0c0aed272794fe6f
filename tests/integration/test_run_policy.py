"""The run policy, input limits and secrets against the real server and engine:
refused images (403, before any pull), limits and their defaults as the engine
sees them (`docker inspect`), `no-new-privileges`, `workdir` under /proc,
denied labels, lone surrogates, `secret_env` and `registry_auth` found nowhere
(data dir, server log, answers, events), the server's registry login lent only
when the settings say so, `env` hidden from other identities, event-stream
limits, and the open-file limit at start."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.support.runs import containers_of, remove_image, run_to_end, start
from tests.support.server import ROOT, ServerFactory, ServerProcess, free_port
from tests.support.sse import Event, log_lines
from tests.support.wait import DEADLINE, Deadline, collect, wait_until

SECRET = "pullrun-secret-9b2e41c7"
PRINTED_SECRET = "pullrun-printed-3d8a0f55"
ENV_VALUE = "only-for-the-owner-5c1e"


def events_dir_files(server: ServerProcess) -> list[str]:
    events = server.data_dir / "events"
    return sorted(p.name for p in events.iterdir()) if events.exists() else []


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def refused_leaves_nothing(server: ServerProcess, client: httpx.Client, before: list[str]) -> None:
    assert events_dir_files(server) == before
    assert client.get("/api/runs").json()["runs"] == [] or before, "a refused run was kept"


# -- images -----------------------------------------------------------------------------


def test_a_refused_image_is_403_before_any_pull(
    server_factory: ServerFactory, registry: str, image: str, docker_api: docker.APIClient
) -> None:
    server = server_factory(allowed_images=f"{registry}/*,docker.io/library/*")
    ref = f"{registry.replace('5000', '5002')}/pullrun/broken:latest"
    remove_image(docker_api, ref)
    with server.client() as client:
        for refused in (ref, image, "3f9c2a1b7d4e"):
            response = client.post("/api/runs", json={"image": refused, "pull": "always"})
            error = error_of(response, 403, "policy_denied")
            assert "PULLRUN_ALLOWED_IMAGES" in error["message"]
        assert client.get("/api/runs").json()["runs"] == []
        assert events_dir_files(server) == []
        with pytest.raises(docker.errors.ImageNotFound):
            docker_api.inspect_image(ref)  # never pulled
        # An allowed image runs as before.
        allowed = f"{registry}/pullrun/busybox:latest"
        run, events = run_to_end(client, image=allowed, command=["echo", "ok"])
        assert run["status"] == "succeeded", run["error"]
        assert log_lines(events) == ["ok"]


# -- limits, no-new-privileges, workdir, labels -------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "setting"),
    [
        ({"memory": "17g"}, "memory", "PULLRUN_MAX_MEMORY"),
        ({"pids_limit": 100000}, "pids_limit", "PULLRUN_MAX_PIDS_LIMIT"),
        ({"cpus": 33}, "cpus", "at most 32 (PULLRUN_MAX_CPUS)"),
        ({"timeout": 30 * 24 * 3600}, "timeout", "PULLRUN_MAX_TIMEOUT"),
        ({"workdir": "/proc"}, "workdir", "/proc"),
        ({"workdir": "/./proc"}, "workdir", "/proc"),
        ({"workdir": "//proc"}, "workdir", "/proc"),
        ({"workdir": "/proc/../proc/self"}, "workdir", "/proc"),
        ({"labels": {"traefik.http.routers.x.rule": "Host(`evil`)"}}, "labels", "DENIED_LABELS"),
        ({"labels": {"com.docker.compose.project": "x"}}, "labels", "DENIED_LABELS"),
        ({"labels": {"caddy": "example.com"}}, "labels", "DENIED_LABELS"),
    ],
)
def test_past_the_policy_is_422_and_leaves_nothing(
    body: dict[str, Any], field: str, setting: str, server: ServerProcess, image: str
) -> None:
    with server.client() as client:
        before = events_dir_files(server)
        runs_before = client.get("/api/runs").json()["runs"]
        error = error_of(
            client.post("/api/runs", json={"image": image, **body}), 422, "invalid_request"
        )
        assert [f["field"] for f in error["fields"]] == [field]
        assert setting in error["message"]
        assert events_dir_files(server) == before
        assert client.get("/api/runs").json()["runs"] == runs_before


def test_limits_and_no_new_privileges_as_the_engine_sees_them(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    script = (
        "grep NoNewPrivs /proc/self/status; "
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"
    )
    run, events = run_to_end(client, image=image, command=["sh", "-c", script], auto_remove=False)
    try:
        assert run["status"] == "succeeded", (run["error"], log_lines(events))
        assert run["spec"]["pids_limit"] == 1024 and run["spec"]["memory"] == 1024**3
        assert run["spec"]["cpus"] == 1.0
        host = docker_api.inspect_container(run["container_id"])["HostConfig"]
        assert host["PidsLimit"] == 1024
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Memory"] == 1024**3
        assert host["NanoCpus"] == 10**9
        lines = log_lines(events)
        assert lines[0].split() == ["NoNewPrivs:", "1"]
        assert lines[1] == "1024"
    finally:
        client.delete(run["links"]["self"])
    assert containers_of(docker_api, run["id"]) == []
    asked, events = run_to_end(
        client,
        image=image,
        command=["sh", "-c", script],
        pids_limit=64,
        memory="32m",
        cpus=0.5,
        auto_remove=False,
    )
    try:
        host = docker_api.inspect_container(asked["container_id"])["HostConfig"]
        assert (host["PidsLimit"], host["Memory"], host["NanoCpus"]) == (
            64,
            32 * 1024**2,
            5 * 10**8,
        )
        assert log_lines(events)[1] == "64"
    finally:
        client.delete(asked["links"]["self"])


def test_more_cpus_than_the_host_has_are_refused_saying_how_many_it_has(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    """Within PULLRUN_MAX_CPUS (32) but above what the engine's host has: a
    422 naming `cpus` when the server knows the engine's CPU count, else the
    engine refuses the container and the run ends with its words (phase
    create). Either way the answer names the count, and no container is left."""
    host_cpus = int(docker_api.info()["NCPU"])
    if host_cpus + 1 > 32:
        pytest.skip(f"this host has {host_cpus} CPUs: asking more is past PULLRUN_MAX_CPUS")
    body = {"image": image, "command": ["true"], "cpus": host_cpus + 1}
    response = client.post("/api/runs", json=body)
    if response.status_code == 422:
        error = error_of(response, 422, "invalid_request")
        assert [f["field"] for f in error["fields"]] == ["cpus"]
        message = error["message"]
    else:
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        events = collect(client, f"/api/runs/{run_id}/events")
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "error" and run["spec"]["cpus"] == host_cpus + 1
        assert run["error"]["phase"] == "create"
        assert events[-1].type == "done" and events[-1].data["error"] == run["error"]
        assert containers_of(docker_api, run_id) == []
        message = run["error"]["message"]
    # 20.10: "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
    assert "CPU" in message and str(host_cpus) in message, message


def test_no_new_privileges_can_be_turned_off(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    server = server_factory(no_new_privileges="false")
    with server.client() as client:
        run, events = run_to_end(
            client,
            image=image,
            command=["grep", "NoNewPrivs", "/proc/self/status"],
            auto_remove=False,
        )
        try:
            host = docker_api.inspect_container(run["container_id"])["HostConfig"]
            assert not host["SecurityOpt"]
            assert log_lines(events)[0].split() == ["NoNewPrivs:", "0"]
        finally:
            client.delete(run["links"]["self"])


# -- lone surrogates --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"image": "pullrun/busybox:base", "env": {"A": "\\ud800"}}',
        b'{"image": "pullrun/busybox:base", "secret_env": {"A": "\\udfff"}}',
        b'{"image": "pullrun/busybox:base", "command": ["echo", "\\ud800"]}',
        b'{"image": "pullrun/busybox:base", "labels": {"\\ud800": "x"}}',
    ],
)
def test_a_lone_surrogate_is_422_and_leaves_no_file(raw: bytes, server: ServerProcess) -> None:
    with server.client() as client:
        before = events_dir_files(server)
        runs_before = client.get("/api/runs").json()["runs"]
        response = client.post(
            "/api/runs", content=raw, headers={"content-type": "application/json"}
        )
        error = error_of(response, 422, "invalid_request")
        assert "Unicode" in error["message"]
        assert events_dir_files(server) == before
        assert client.get("/api/runs").json()["runs"] == runs_before


# -- secrets ------------------------------------------------------------------------------


class FeedRecorder:
    """Reads GET /api/events in a thread, keeping every event, until stopped."""

    def __init__(self, server: ServerProcess) -> None:
        self.events: list[Event] = []
        self.raw = bytearray()
        self._client = server.client(timeout=DEADLINE)
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> FeedRecorder:
        self._thread.start()
        assert self._open.wait(DEADLINE), "the feed did not open"
        return self

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/api/events") as response:
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    self.raw += chunk
                    self._open.set()
                    if self._stop.is_set():
                        return
        except httpx.HTTPError:
            if not self._stop.is_set():  # closed under it when stopped: fine
                raise

    def wait_for(self, predicate: Any, what: str) -> None:
        wait_until(lambda: predicate(bytes(self.raw)), what)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(DEADLINE)


def test_secrets_reach_the_container_and_are_found_nowhere(
    server_factory: ServerFactory,
    auth_registry: dict[str, str],
    image: str,
    docker_api: docker.APIClient,
) -> None:
    """`secret_env` and `registry_auth`: the data dir, the server log (at debug
    level), every API answer, page and event carry neither."""
    server = server_factory(log_level="debug")
    password = auth_registry["password"]
    private = f"{auth_registry['host']}/pullrun/private:latest"
    remove_image(docker_api, private)
    answers: list[str] = []
    with server.client() as client, FeedRecorder(server) as feed:
        # It reaches the container: printed, the run's log has it (what a
        # container prints is its output, kept as such). Deleting the run
        # deletes that log.
        printed, events = run_to_end(
            client, image=image, command=["sh", "-c", "echo $P"], secret_env={"P": PRINTED_SECRET}
        )
        assert log_lines(events) == [PRINTED_SECRET]
        assert printed["spec"]["secret_env"] == {"P": "***"}
        assert client.delete(printed["links"]["self"]).status_code == 204
        # The run the search is about: a private image pulled with registry_auth,
        # the secret checked inside by its digest, so the output never holds it.
        try:
            response = client.post(
                "/api/runs",
                json={
                    "image": private,
                    "pull": "always",
                    "command": ["sh", "-c", 'printf %s "$S" | sha256sum'],
                    "secret_env": {"S": SECRET},
                    "env": {"PLAIN": "visible"},
                    "registry_auth": {"username": auth_registry["username"], "password": password},
                },
            )
            assert response.status_code == 201, response.text
            run = response.json()
            events = collect(client, run["links"]["events"])
        finally:
            remove_image(docker_api, private)
        final = client.get(run["links"]["self"])
        answers += [
            response.text,
            final.text,
            client.get("/api/runs").text,
            client.get(run["links"]["logs"]).text,
            client.get(run["links"]["page"]).text,
            client.get(f"/?from={run['id']}").text,
            client.get("/").text,
        ]
        feed.wait_for(
            lambda raw: run["id"].encode() in raw and b'"status":"succeeded"' in raw,
            "the run's end on the feed",
        )
    assert final.json()["status"] == "succeeded", final.json()["error"]
    assert log_lines(events)[0].split()[0] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert final.json()["spec"]["secret_env"] == {"S": "***"}
    assert final.json()["spec"]["env"] == {"PLAIN": "visible"}
    assert "S=***" in answers[5]  # "Run again": the key, not the value
    server.stop()  # the databases checkpointed, the log complete
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any(p.name == "pullrun.db" for p in files)
    assert "POST /api/runs" in server.log()  # the log is at debug level: access lines too
    for secret in (SECRET, password, PRINTED_SECRET):  # the printed one left with its run
        needle = secret.encode()
        for path in files:
            assert needle not in path.read_bytes(), f"{secret!r} found in {path}"
        for answer in answers:
            assert secret not in answer
        for event in events:
            assert secret not in json.dumps(event.data)
        assert needle not in bytes(feed.raw)


# -- the server's own registry login --------------------------------------------------------


@contextlib.contextmanager
def docker_login(tmp_path: Path, auth_registry: dict[str, str]) -> Iterator[Path]:
    """A docker config dir of the test's own, logged in to the password registry
    (`docker --config DIR login`, or the file it writes when there is no CLI)."""
    config = tmp_path / "docker-config"
    config.mkdir()
    cli = shutil.which("docker")
    if cli:
        done = subprocess.run(
            [
                cli,
                "--config",
                str(config),
                "login",
                auth_registry["host"],
                "-u",
                auth_registry["username"],
                "--password-stdin",
            ],
            input=auth_registry["password"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    else:
        pair = f"{auth_registry['username']}:{auth_registry['password']}".encode()
        auths = {auth_registry["host"]: {"auth": base64.b64encode(pair).decode()}}
        (config / "config.json").write_text(json.dumps({"auths": auths}))
    assert auth_registry["host"] in (config / "config.json").read_text()
    yield config


@pytest.mark.parametrize(("lend", "pulls"), [(None, False), ("true", True)])
def test_the_server_login_is_lent_only_when_the_setting_says(
    lend: str | None,
    pulls: bool,
    server_factory: ServerFactory,
    auth_registry: dict[str, str],
    docker_api: docker.APIClient,
    tmp_path: Path,
) -> None:
    private = f"{auth_registry['host']}/pullrun/private:latest"
    settings = {} if lend is None else {"lend_server_credentials": lend}
    with docker_login(tmp_path, auth_registry) as config:
        server = server_factory(env={"DOCKER_CONFIG": str(config)}, **settings)
        remove_image(docker_api, private)
        try:
            with server.client() as client:
                run, events = run_to_end(client, image=private, command=["echo", "pulled"])
        finally:
            remove_image(docker_api, private)
    if pulls:
        assert run["status"] == "succeeded", run["error"]
        assert log_lines(events) == ["pulled"]
    else:
        assert run["status"] == "error" and run["error"]["phase"] == "pull", run
        message = run["error"]["message"].lower()
        assert "no basic auth credentials" in message or "unauthorized" in message, message


# -- env for other identities -------------------------------------------------------------


def test_env_values_are_shown_only_to_their_creator_and_admins(
    server: ServerProcess, image: str
) -> None:
    owner = server.create_token("operator")
    other = server.create_token("operator")
    viewer = server.create_token("viewer")
    with server.client(token=owner) as client:
        run, _ = run_to_end(client, image=image, command=["true"], env={"E": ENV_VALUE})
        assert run["spec"]["env"] == {"E": ENV_VALUE}
    for token, sees in ((owner, True), (server.token, True), (other, False), (viewer, False)):
        with server.client(token=token) as client:
            one = client.get(run["links"]["self"]).json()
            listed = [r for r in client.get("/api/runs").json()["runs"] if r["id"] == run["id"]]
            page = client.get(run["links"]["page"]).text
            again = client.get(f"/?from={run['id']}").text
        expected = {"E": ENV_VALUE if sees else "***"}
        assert one["spec"]["env"] == expected and listed[0]["spec"]["env"] == expected
        assert (ENV_VALUE in page) is sees and (ENV_VALUE in again) is sees
    with server.client() as client, FeedRecorder(server) as feed:  # the admin's feed too
        again_run, _ = run_to_end(client, image=image, command=["true"], env={"E": ENV_VALUE})
        feed.wait_for(
            lambda raw: again_run["id"].encode() in raw and b"succeeded" in raw, "the feed"
        )
    assert ENV_VALUE.encode() not in bytes(feed.raw)
    assert b'"env":{"E":"***"}' in bytes(feed.raw)


# -- event-stream limits ------------------------------------------------------------------


def test_event_streams_past_the_limits_get_429_with_retry_after(
    server_factory: ServerFactory, image: str
) -> None:
    server = server_factory(max_sse_connections=3, max_sse_connections_per_identity=2)
    viewer_a, viewer_b = server.create_token("viewer"), server.create_token("viewer")
    reading: list[Iterator[bytes]] = []  # a dropped iterator closes its connection
    with contextlib.ExitStack() as stack:

        def open_feed(token: str | None) -> httpx.Response:
            client = stack.enter_context(server.client(token=token, timeout=DEADLINE))
            response = stack.enter_context(client.stream("GET", "/api/events"))
            if response.status_code == 200:
                reading.append(response.iter_raw())
                assert next(reading[-1]).startswith(b": run feed")  # it is open
            return response

        assert open_feed(None).status_code == 200
        assert open_feed(None).status_code == 200
        third = open_feed(None)
        third.read()
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert "PER_IDENTITY" in third.json()["error"]["message"]
        assert open_feed(viewer_a).status_code == 200  # 3 open: the total
        fourth = open_feed(viewer_b)
        fourth.read()
        assert fourth.status_code == 429 and fourth.headers["retry-after"]
        assert "PULLRUN_MAX_SSE_CONNECTIONS)" in fourth.json()["error"]["message"]
    # Closed streams give their places back.
    with server.client(token=viewer_b) as client:

        def opens() -> bool:
            with client.stream("GET", "/api/events") as response:
                return response.status_code == 200

        wait_until(opens, "a stream to be allowed again once the others closed")


def test_a_run_stream_counts_and_its_end_frees_its_place(
    server_factory: ServerFactory, image: str
) -> None:
    server = server_factory(max_sse_connections=1, max_sse_connections_per_identity=1)
    with server.client() as client:
        record = start(client, image=image, command=["sh", "-c", "echo hi; sleep 1"])
        with client.stream("GET", "/api/events") as feed:
            assert feed.status_code == 200
            refused = client.get(record["links"]["events"])
            assert refused.status_code == 429 and refused.headers["retry-after"]
        events = wait_until(
            lambda: _collect_or_none(client, record["links"]["events"]),
            "the run's stream once the feed closed",
        )
        assert events[-1].type == "done"
        # The run stream ended with `done`: its place is free again.
        wait_until(
            lambda: _collect_or_none(client, record["links"]["events"], limit=1),
            "a stream once the run's stream ended",
        )


def _collect_or_none(
    client: httpx.Client, url: str, limit: int | None = None
) -> list[Event] | None:
    """The stream's events (to `done`, or `limit` of them); None when refused (429)."""
    with client.stream("GET", url, params={"after": 0}) as response:
        if response.status_code == 429:
            return None
        assert response.status_code == 200, response.read()
        events: list[Event] = []
        for event in Deadline(f"events of {url}").events(response):
            events.append(event)
            if event.type == "done" or (limit is not None and len(events) >= limit):
                break
        return events


# -- the open-file limit ------------------------------------------------------------------


def _serve(tmp_path: Path, nofile: tuple[int, int], **settings: str) -> subprocess.Popen[bytes]:
    port = free_port()
    env = dict(os.environ)
    env.update({f"PULLRUN_{k.upper()}": v for k, v in settings.items()})
    env.update(
        PULLRUN_DATA_DIR=str(tmp_path / "data"), PULLRUN_PORT=str(port), PULLRUN_HOST="127.0.0.1"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )
    proc.port = port  # type: ignore[attr-defined]
    return proc


def test_a_hard_open_file_limit_too_low_refuses_to_start(tmp_path: Path) -> None:
    proc = _serve(tmp_path, (256, 512))
    output, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode != 0
    text = output.decode(errors="replace")
    assert "open-file limit is too low" in text and "PULLRUN_MAX_SSE_CONNECTIONS" in text


def test_the_soft_open_file_limit_is_raised_at_start(tmp_path: Path) -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 8192)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip(f"this machine's hard open-file limit is {hard}")
    proc = _serve(tmp_path, (900, hard))
    try:
        url = f"http://127.0.0.1:{proc.port}/healthz"  # type: ignore[attr-defined]

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                return httpx.get(url, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, "the server to answer /healthz")
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        proc.terminate()
        proc.communicate(timeout=DEADLINE)
