"""REST API against the real engine: the run object it fills in, deletion of
a kept container, readiness with the engine there and unreachable.

Validation, listing and pagination, the error shape, cancel/delete rules and
/readyz's answers are tested in-process with the in-memory engine
(tests/unit/test_api_inprocess.py)."""

from __future__ import annotations

from pathlib import Path

import docker
import httpx

from tests.support.runs import containers_of, run_to_end, start
from tests.support.server import ServerProcess


def test_run_object_shape(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command="echo 'two words'", env={"A": "1"})
    assert run["spec"]["command"] == ["echo", "two words"]
    assert run["spec"]["env"] == {"A": "1"}
    assert log_text(client, run) == "two words\n"
    for key in ("created_at", "started_at", "finished_at", "container_id", "image_digest"):
        assert run[key], key
    assert set(run["durations"]) == {"queue", "pull", "create", "start", "run", "total"}
    assert run["durations"]["total"] >= run["durations"]["run"] > 0
    assert run["last_event_id"] == len(events)
    assert run["links"] == {
        "self": f"/api/runs/{run['id']}",
        "events": f"/api/runs/{run['id']}/events",
        "logs": f"/api/runs/{run['id']}/logs",
        "page": f"/runs/{run['id']}",
    }


def log_text(client: httpx.Client, run: dict[str, object]) -> str:
    links = run["links"]
    assert isinstance(links, dict)
    return client.get(links["logs"]).text


def test_delete_finished_run_only(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    active = start(client, image=image, command=["sleep", "30"])
    response = client.delete(active["links"]["self"])
    assert response.status_code == 409
    client.post(f"/api/runs/{active['id']}/cancel")
    kept, _ = run_to_end(client, image=image, command=["true"], auto_remove=False)
    assert len(containers_of(docker_api, kept["id"])) == 1
    assert client.delete(kept["links"]["self"]).status_code == 204
    assert containers_of(docker_api, kept["id"]) == []
    assert client.get(kept["links"]["self"]).status_code == 404
    assert client.get(kept["links"]["events"]).status_code == 404
    assert client.delete(kept["links"]["self"]).status_code == 404


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_readyz_is_503_when_the_engine_is_unreachable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.sock"
    with (
        ServerProcess(
            tmp_path / "data",
            env={"DOCKER_HOST": f"unix://{missing}", "PULLRUN_PLACEMENT_TIMEOUT": "1"},
        ) as server,
        server.client() as client,
    ):
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "engine_unavailable" and error["message"]
        # The run waits for its engine, says so, and gives up after the
        # placement timeout.
        run, events = run_to_end(client, image="busybox")
        assert run["status"] == "error"
        assert run["error"]["phase"] == "queue"
        assert "PULLRUN_PLACEMENT_TIMEOUT" in events[-1].data["error"]["message"]
        notices = [e.data["message"] for e in events if e.type == "notice"]
        assert any("none of the engines this run may use is up (local)" in n for n in notices)
