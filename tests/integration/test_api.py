"""REST API: validation, listing, deletion, health."""

from __future__ import annotations

from pathlib import Path

import docker
import httpx
import pytest

from tests.support.runs import containers_of, run_to_end, start
from tests.support.server import ServerProcess


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "image", "required"),
        ({"image": "Not Valid"}, "image", "reference"),
        ({"image": "UPPER/case"}, "image", "lowercase"),
        ({"image": "busybox", "env": {"1BAD": "x"}}, "env", "[A-Za-z_]"),
        ({"image": "busybox", "memory": "lots"}, "memory", "256m"),
        ({"image": "busybox", "memory": "1k"}, "memory", "at least"),
        ({"image": "busybox", "pull": "sometimes"}, "pull", "missing"),
        ({"image": "busybox", "timeout": -1}, "timeout", "greater than 0"),
        ({"image": "busybox", "timeout": 1e10}, "timeout", "less than or equal"),
        ({"image": "busybox", "command": "echo 'unclosed"}, "command", "shell"),
        ({"image": "busybox", "platform": "linux amd64"}, "platform", "os[/arch"),
        ({"image": "busybox", "registry_auth": {"username": "u"}}, "registry_auth", "password"),
        ({"image": "busybox", "labels": {"pullrun.run": "x"}}, "labels", "reserved"),
        ({"image": "busybox", "bogus": 1}, "bogus", "not permitted"),
    ],
)
def test_bad_input_is_422_naming_field_and_rule(
    client: httpx.Client, body: dict[str, object], field: str, words: str
) -> None:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(f["field"] == field and words in f["message"] for f in error["fields"]), error
    assert field in error["message"]


def test_malformed_json_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_list_is_newest_first_filtered_and_paginated(tmp_path: Path, image: str) -> None:
    with (
        ServerProcess(tmp_path / "data") as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        ids = []
        for code in (0, 1, 0, 1, 0):
            run, _ = run_to_end(client, image=image, command=["sh", "-c", f"exit {code}"])
            ids.append(run["id"])
        page1 = client.get("/api/runs", params={"limit": 2}).json()
        assert [r["id"] for r in page1["runs"]] == ids[::-1][:2]
        page2 = client.get("/api/runs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
        page3 = client.get("/api/runs", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
        assert [r["id"] for r in page2["runs"] + page3["runs"]] == ids[::-1][2:]
        assert page3["next_cursor"] is None
        failed = client.get("/api/runs", params={"status": "failed"}).json()["runs"]
        assert [r["id"] for r in failed] == [ids[3], ids[1]]
        both = client.get("/api/runs", params=[("status", "failed"), ("status", "succeeded")])
        assert len(both.json()["runs"]) == 5
        assert client.get("/api/runs", params={"status": "nonsense"}).status_code == 422


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
        ServerProcess(tmp_path / "data", env={"DOCKER_HOST": f"unix://{missing}"}) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "engine_unavailable" and error["message"]
        run, events = run_to_end(client, image="busybox")
        assert run["status"] == "error"
        assert events[-1].data["error"]["message"]


def test_openapi_documents_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/events", "/api/events"):
        assert path in spec["paths"]
    assert "registry_auth" in spec["components"]["schemas"]["RunCreate"]["properties"]
    assert "registry_auth" not in spec["components"]["schemas"]["RunRecord"]["properties"]
    assert client.get("/docs").status_code == 200
