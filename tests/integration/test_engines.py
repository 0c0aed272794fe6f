"""Many engines: placement across three real engines, and an engine that dies.

`local` is the default engine, `two` a second dockerd on a unix socket and
`three` a third on tcp://127.0.0.1 with TLS (scripts/engines.sh). Where a run
landed is checked with that engine's own API (`docker ps -a --filter
label=pullrun.run=ID`), not only with what the server says.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import docker
import httpx
import pytest

from tests.support.engines import (
    NAMES,
    EngineSet,
    FeedRecorder,
    containers_on,
    engine_two_restored,
    engine_views,
    is_engine_event,
    remove_containers,
    wait_for_engine,
    write_engines_file,
)
from tests.support.runs import SLEEPER, gate, open_gate, remove_image, run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.sse import log_lines
from tests.support.wait import DEADLINE, collect, wait_for_status, wait_until

LABELS = {
    "local": {"zone": "a"},
    "two": {"zone": "b"},
    "three": {"zone": "b", "tls": "yes"},
}


@pytest.fixture(scope="module")
def engines() -> EngineSet:
    return EngineSet.from_env()


@pytest.fixture(scope="module")
def busybox(registry: str) -> str:
    """In the registry; each engine pulls it the first time a run needs it there."""
    return f"{registry}/pullrun/busybox:latest"


@pytest.fixture(scope="module")
def engines_server(
    engines: EngineSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server over the three engines (4 slots each) for the tests that
    leave every engine as they found it."""
    path = write_engines_file(
        tmp_path_factory.mktemp("engines") / "engines.toml", engines.tables(labels=LABELS)
    )
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("server") / "data")
    try:
        yield factory(engines_file=path)
    finally:
        factory.stop_all()


@contextlib.contextmanager
def engine_api(engines: EngineSet, name: str) -> Iterator[docker.APIClient]:
    api = engines.api(name)
    try:
        yield api
    finally:
        api.close()


def where(engines: EngineSet, run_id: str) -> list[str]:
    """The engines on which a container of this run exists."""
    found = []
    for name in NAMES:
        with engine_api(engines, name) as api:
            if containers_on(api, run_id):
                found.append(name)
    return found


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# -- /api/engines ------------------------------------------------------------------------


def test_api_engines_describes_every_engine_without_secrets(
    engines_server: ServerProcess, engines: EngineSet
) -> None:
    viewer = engines_server.create_token("viewer")
    with engines_server.client(token=viewer) as client:
        for name in NAMES:
            wait_for_engine(client, name, "up")
        body = client.get("/api/engines").json()
    assert [view["name"] for view in body["engines"]] == list(NAMES)
    views = {view["name"]: view for view in body["engines"]}
    assert views["two"]["host"] == engines.two_host
    assert views["three"]["host"] == engines.three_host
    for name, view in views.items():
        assert view["kind"] == "docker"
        assert view["labels"] == LABELS[name]
        assert view["state"] == "up" and view["last_error"] is None
        assert view["version"] and view["api_version"]
        assert view["os"] == "linux" and view["arch"]
        assert view["cpus"] >= 1 and view["memory"] > 0
        assert view["max_concurrent_runs"] == 4
        assert view["active_runs"] == 0 and view["queued_runs"] == 0
        assert view["checked_at"]
    # The client key and certificates stay on the server.
    key = (engines.three_tls / "key.pem").read_text()
    text = str(body)
    assert str(engines.three_tls) not in text and key.strip().splitlines()[1] not in text
    with engines_server.anonymous() as anonymous:
        assert anonymous.get("/api/engines").status_code == 401


# -- placement -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_run_pinned_to_an_engine_lands_there(
    name: str, engines_server: ServerProcess, engines: EngineSet, busybox: str
) -> None:
    with engines_server.client() as client:
        run, events = run_to_end(
            client, image=busybox, command=["echo", f"on {name}"], engine=name, auto_remove=False
        )
    try:
        assert run["status"] == "succeeded", run["error"]
        assert run["engine"] == name and run["spec"]["engine"] == name
        assert log_lines(events) == [f"on {name}"]
        # The status event that leaves the queue says where.
        placed = [e.data for e in events if e.type == "status" and "engine" in e.data]
        assert placed and placed[0]["engine"] == name, [e.data for e in events[:5]]
        # That engine's own `docker ps -a` has the container; the others do not.
        with engine_api(engines, name) as api:
            assert [c["Id"] for c in containers_on(api, run["id"])] == [run["container_id"]]
        assert where(engines, run["id"]) == [name]
    finally:
        with engine_api(engines, name) as api:
            remove_containers(api, [run["id"]])


def test_engine_labels_choose_among_the_engines_that_have_them(
    engines_server: ServerProcess, engines: EngineSet, busybox: str
) -> None:
    with engines_server.client() as client:
        tls, _ = run_to_end(
            client, image=busybox, command=["true"], engine_labels={"tls": "yes"}, auto_remove=False
        )
        zone_b = [
            run_to_end(
                client,
                image=busybox,
                command=["true"],
                engine_labels={"zone": "b"},
                auto_remove=False,
            )[0]
            for _ in range(3)
        ]
    runs = [tls, *zone_b]
    try:
        assert all(r["status"] == "succeeded" for r in runs), [r["error"] for r in runs]
        assert tls["engine"] == "three" and where(engines, tls["id"]) == ["three"]
        for run in zone_b:
            assert run["engine"] in ("two", "three")
            assert where(engines, run["id"]) == [run["engine"]]
    finally:
        for name in ("two", "three"):
            with engine_api(engines, name) as api:
                remove_containers(api, [r["id"] for r in runs])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"engine": "nowhere"}, "engine"),
        ({"engine_labels": {"zone": "c"}}, "engine_labels"),
        ({"engine_labels": {"zone": "a", "tls": "yes"}}, "engine_labels"),
        ({"platform": "linux/s390x"}, "platform"),
        ({"platform": "windows/amd64"}, "platform"),
    ],
)
def test_a_run_no_engine_could_take_is_422_and_leaves_nothing(
    body: dict[str, Any], field: str, engines_server: ServerProcess, busybox: str
) -> None:
    with engines_server.client() as client:
        before = client.get("/api/runs").json()["runs"]
        error = error_of(client.post("/api/runs", json={"image": busybox, **body}), 422)
        assert error["code"] == "invalid_request"
        assert [f["field"] for f in error["fields"]] == [field], error
        assert client.get("/api/runs").json()["runs"] == before


def test_the_platform_must_match_the_engine(
    engines_server: ServerProcess, engines: EngineSet, busybox: str
) -> None:
    with engines_server.client() as client:
        view = engine_views(client)["three"]
        own = f"{view['os']}/{view['arch']}"
        other = "linux/arm64" if view["arch"] != "arm64" else "linux/amd64"
        # Pinned to an engine of another platform: refused.
        error = error_of(
            client.post("/api/runs", json={"image": busybox, "engine": "three", "platform": other}),
            422,
        )
        assert [f["field"] for f in error["fields"]] == ["platform"], error
        run, _ = run_to_end(client, image=busybox, command=["true"], engine="three", platform=own)
    assert run["status"] == "succeeded", run["error"]
    assert run["engine"] == "three"


def test_placement_prefers_the_engine_that_has_the_image(
    engines_server: ServerProcess, engines: EngineSet, busybox: str
) -> None:
    """An image only engine two has (a tag no registry knows): every run goes
    there, and none pulls."""
    only_two = f"{busybox.rpartition(':')[0]}:only-two-{secrets.token_hex(4)}"
    with engine_api(engines, "two") as api:
        api.pull(busybox)
        api.tag(busybox, only_two)
    try:
        with engines_server.client() as client:
            for _ in range(4):  # by chance alone: 1 in 81
                run, events = run_to_end(client, image=only_two, command=["echo", "here"])
                assert run["status"] == "succeeded", run["error"]
                assert run["engine"] == "two"
                assert run["pull"] == {"policy": "missing", "pulled": False}
                assert [e for e in events if e.type == "pull"] == []
    finally:
        with engine_api(engines, "two") as api:
            remove_image(api, only_two)


def test_a_queue_spills_over_from_a_full_engine_to_a_free_one(
    server_factory: ServerFactory,
    engines: EngineSet,
    busybox: str,
    registry: str,
    tmp_path: Path,
) -> None:
    """One slot on each of local and two. With both full, runs wait in order; a
    run whose image only local has goes to two when two frees first."""
    tables = engines.tables(slots={"local": 1, "two": 1})
    del tables["three"]
    server = server_factory(engines_file=write_engines_file(tmp_path / "e.toml", tables))
    layers = f"{registry}/pullrun/layers:latest"
    with engine_api(engines, "local") as local, engine_api(engines, "two") as two:
        local.pull(layers)
        remove_image(two, layers)
        try:
            with server.client() as client:
                a = start(client, image=busybox, command=["sh", "-c", gate()], engine="local")
                b = start(client, image=busybox, command=["sh", "-c", gate()], engine="two")
                wait_for_status(client, a["id"], "running")
                wait_for_status(client, b["id"], "running")
                c = start(client, image=layers, command=["echo", "spilled"])
                d = start(client, image=busybox, command=["echo", "waited"], engine="local")
                wait_until(
                    lambda: all(v["queued_runs"] >= 1 for v in engine_views(client).values()),
                    "both engines to count a queued run",
                )
                assert client.get(c["links"]["self"]).json()["status"] == "queued"
                views = engine_views(client)
                assert views["local"]["active_runs"] == views["two"]["active_runs"] == 1
                # Two frees first: c goes there (and pulls), d still waits for local.
                open_gate(two, b["id"])
                c_done = wait_for_status(client, c["id"], ("succeeded", "failed", "error"))
                assert c_done["status"] == "succeeded", c_done["error"]
                assert c_done["engine"] == "two" and c_done["pull"]["pulled"] is True
                assert client.get(d["links"]["self"]).json()["status"] == "queued"
                open_gate(local, a["id"])
                d_done = wait_for_status(client, d["id"], ("succeeded", "failed", "error"))
                assert d_done["status"] == "succeeded", d_done["error"]
                assert d_done["engine"] == "local"
                for run in (a, b):
                    assert (
                        wait_for_status(client, run["id"], "succeeded")["engine"]
                        == run["spec"]["engine"]
                    )
        finally:
            remove_image(local, layers)
            remove_image(two, layers)


# -- faults --------------------------------------------------------------------------------


def test_an_engine_that_dies_ends_its_run_and_comes_back(
    server_factory: ServerFactory, engines: EngineSet, busybox: str, tmp_path: Path
) -> None:
    """Kill engine two's dockerd mid-run: its run ends with `error` naming the
    engine, a run on local goes on and succeeds, new runs go elsewhere or wait
    for two; two comes back and takes runs. /api/engines and `engine` events
    on /api/events follow."""
    path = write_engines_file(tmp_path / "e.toml", engines.tables(labels=LABELS))
    server = server_factory(engines_file=path, engine_check_interval=1)
    killed: list[str] = []
    with (
        engine_two_restored(engines),
        server.client() as client,
        FeedRecorder(server) as feed,
        engine_api(engines, "local") as local,
    ):
        for name in NAMES:
            wait_for_engine(client, name, "up")
        doomed = start(client, image=busybox, command=SLEEPER, engine="two")
        killed.append(doomed["id"])
        survivor = start(client, image=busybox, command=["sh", "-c", gate()], engine="local")
        collect(client, doomed["links"]["events"], until="log")  # it printed `started`
        wait_for_status(client, survivor["id"], "running")

        engines.kill_two()
        ended = wait_for_status(client, doomed["id"], ("succeeded", "failed", "error", "canceled"))
        assert ended["status"] == "error", ended
        assert ended["error"]["phase"] == "run", ended["error"]
        assert ended["error"]["message"].startswith("engine two: "), ended["error"]
        events = collect(client, doomed["links"]["events"])
        assert events[-1].type == "done" and events[-1].data["error"] == ended["error"]
        down = wait_for_engine(client, "two", "down")
        assert down["last_error"]
        feed.wait_for(lambda e: is_engine_event(e, "two", "down"), "an `engine` event: two down")

        # While two is down: an unpinned run goes elsewhere, one pinned to two waits.
        elsewhere, _ = run_to_end(client, image=busybox, command=["true"])
        assert elsewhere["status"] == "succeeded" and elsewhere["engine"] != "two"
        waiting = start(client, image=busybox, command=["echo", "back"], engine="two")
        notice = collect(client, waiting["links"]["events"], until="notice")[-1]
        assert "two" in notice.data["message"]
        assert client.get(waiting["links"]["self"]).json()["status"] == "queued"

        # The run on local never noticed.
        open_gate(local, survivor["id"])
        survived = wait_for_status(client, survivor["id"], ("succeeded", "failed", "error"))
        assert survived["status"] == "succeeded", survived["error"]

        engines.start_two()
        wait_for_engine(client, "two", "up")
        feed.wait_for(lambda e: is_engine_event(e, "two", "up"), "an `engine` event: two up")
        states = feed.engine_states("two")
        assert "up" in states[states.index("down") :], states
        back = wait_for_status(client, waiting["id"], ("succeeded", "failed", "error"))
        assert back["status"] == "succeeded" and back["engine"] == "two", back
        again, events = run_to_end(client, image=busybox, command=["echo", "again"], engine="two")
        assert again["status"] == "succeeded" and again["engine"] == "two", again["error"]
        assert log_lines(events) == ["again"]
        for name in NAMES:
            assert engine_views(client)[name]["state"] == "up"
    with engine_api(engines, "two") as two:
        remove_containers(two, killed)


def test_a_ca_bundle_in_the_environment_does_not_replace_the_engines_ca(
    server_factory: ServerFactory, engines: EngineSet, busybox: str, tmp_path: Path
) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over a client's own
    CA (psf/requests#3829): engine three's `tls_ca` must still be the one used."""
    bundle = Path(certifi.where())
    tables = {"three": engines.tables()["three"]}
    server = server_factory(
        engines_file=write_engines_file(tmp_path / "e.toml", tables),
        env={"REQUESTS_CA_BUNDLE": str(bundle), "CURL_CA_BUNDLE": str(bundle)},
    )
    with server.client() as client:
        wait_for_engine(client, "three", "up")
        run, _ = run_to_end(client, image=busybox, command=["true"])
    assert run["status"] == "succeeded", run["error"]
    assert run["engine"] == "three"


# -- the engines file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "engine", "field"),
    [
        ('[engines.two]\nhots = "unix:///x.sock"\n', "two", "hots"),
        ('[engines.gpu1]\nhost = "ftp://10.1.2.3"\n', "gpu1", "host"),
        ('[engines.b]\nhost = "tcp://127.0.0.1:1"\ntls_ca = "/no/such/ca.pem"\n', "b", "tls_ca"),
        ("[engines.local]\nmax_concurrent_runs = 0\n", "local", "max_concurrent_runs"),
        ("[engines.x]\nlabels = { gpu = 1 }\n", "x", "labels"),
    ],
)
def test_a_bad_engines_file_stops_the_start_naming_engine_and_field(
    table: str, engine: str, field: str, tmp_path: Path
) -> None:
    path = tmp_path / "engines.toml"
    path.write_text(table)
    server = ServerProcess(tmp_path / "data", engines_file=path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve"],
        cwd=server.root,
        env=server.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert f"'{engine}'" in stderr and field in stderr, stderr
    assert "Traceback" not in stderr, stderr
