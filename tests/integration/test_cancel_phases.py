"""Cancel lands in create and in start: the real engine and server, with a
gate that holds the pipeline just before the engine call of that phase."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import uvicorn

from backend.auth.accounts import Accounts
from backend.auth.roles import Role
from backend.auth.store import AuthStore
from backend.engines.docker import DockerEngine
from backend.settings import Settings
from backend.web.app import create_app
from tests.support.runs import SLEEPER, containers_of, start
from tests.support.server import free_port
from tests.support.wait import DEADLINE, collect, wait_until


class Gate:
    def __init__(self) -> None:
        self.phase = ""
        self.reached = threading.Event()
        self.release = threading.Event()

    def hold(self, phase: str) -> None:
        if phase == self.phase:
            self.reached.set()
            assert self.release.wait(DEADLINE), f"the test never released the {phase} gate"


def gated_engine(gate: Gate) -> type[DockerEngine]:
    class GatedEngine(DockerEngine):
        def create(self, run_id: str, spec: Any, name: str | None = None, **options: Any) -> str:
            gate.hold("create")
            return super().create(run_id, spec, name, **options)

        def start(self, container_id: str) -> None:
            gate.hold("start")
            super().start(container_id)

    return GatedEngine


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Gate, httpx.Client]]:
    gate = Gate()
    settings = Settings(data_dir=tmp_path / "data", port=free_port())
    with AuthStore(settings.auth_db_path) as store:
        token = Accounts(store).create_token("tests", Role.ADMIN)
    app = create_app(settings, engine_factory=gated_engine(gate))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    wait_until(lambda: server.started or not thread.is_alive(), "the in-process server to start")
    assert server.started, "the in-process server's thread ended before it started"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        yield gate, client
    gate.release.set()
    server.should_exit = True
    thread.join(30)


@pytest.mark.parametrize("phase", ["create", "start"])
def test_cancel_in_phase(
    gated: tuple[Gate, httpx.Client], phase: str, image: str, docker_api: docker.APIClient
) -> None:
    gate, client = gated
    gate.phase = phase
    record = start(client, image=image, command=SLEEPER)
    assert gate.reached.wait(DEADLINE), f"the pipeline never reached {phase}"
    assert (
        client.get(record["links"]["self"]).json()["status"]
        == {
            "create": "creating",
            "start": "starting",
        }[phase]
    )
    assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
    gate.release.set()
    # SLEEPER sleeps 300 s, longer than collect waits: a run that ends at all
    # did not let its container run on after the cancel.
    events = collect(client, record["links"]["events"])
    done = events[-1].data
    assert done["status"] == "canceled"
    assert done["error"] == {"phase": phase, "message": "canceled by request"}
    assert not [e for e in events if e.type == "status" and e.data["status"] == "running"]
    assert containers_of(docker_api, record["id"]) == []


def test_a_failure_while_finishing_still_ends_the_run_and_keeps_the_worker(
    gated: tuple[Gate, httpx.Client], image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final save fails once (say, the disk is full): the log still gets its
    `done`, and the worker goes on to run the next run."""
    from backend.storage.store import RunStore

    real_save = RunStore.save
    failed: list[str] = []

    def flaky_save(self: RunStore, record: Any) -> None:
        if record.status.terminal and not failed:
            failed.append(record.id)
            raise OSError("disk full (simulated)")
        real_save(self, record)

    monkeypatch.setattr(RunStore, "save", flaky_save)
    _, client = gated
    first = start(client, image=image, command=["echo", "one"])
    events = collect(client, first["links"]["events"])
    assert events[-1].type == "done" and events[-1].data["status"] == "succeeded"
    assert failed == [first["id"]]
    for _ in range(5):  # more runs than workers: none may be stuck
        second = start(client, image=image, command=["echo", "two"])
        assert collect(client, second["links"]["events"])[-1].data["status"] == ("succeeded")
