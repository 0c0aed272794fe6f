"""REST API in-process (create_app with the in-memory engine, Starlette's
TestClient): validation, listing and pagination, the error shape, cancel,
delete, logs, stats, /readyz. What needs the real engine stays in
tests/integration/test_api.py.

(Not named test_api.py: tests/integration/test_api.py has that basename, and
without __init__.py files pytest cannot collect two modules of one name.)
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.engines.fake import (
    FakeDocker,
    Program,
    recorded_attach,
    recorded_errors,
    recorded_version,
    stdout,
)
from backend.settings import Settings
from backend.storage.reader import decode_events
from backend.web import api
from backend.web.app import create_app
from tests.unit.conftest import BASE, bearer, events_of, make_token, wait_until


def start(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("image", BASE)
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/runs/{record['id']}"
    return record


def finished(client: TestClient, run_id: str) -> dict[str, Any]:
    def record() -> dict[str, Any] | None:
        got: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        return (
            got
            if got["status"] not in ("queued", "pulling", "creating", "starting", "running")
            else None
        )

    final = wait_until(record, f"run {run_id} to finish")
    wait_until(lambda: client.get("/api/stats").json()["active_runs"] == 0, "no active runs")
    return final


def run_to_end(client: TestClient, **body: Any) -> dict[str, Any]:
    return finished(client, start(client, **body)["id"])


def assert_error(response: Any, status: int, code: str, words: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code and words in error["message"], error
    return error


def hang(daemon: FakeDocker) -> list[str]:
    command = ["hang"]
    daemon.program(command, Program(output=[stdout(b"started\n"), daemon.gate("forever")]))
    return command


# -- validation ---------------------------------------------------------------------------------


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
    client: TestClient, daemon: FakeDocker, body: dict[str, object], field: str, words: str
) -> None:
    error = assert_error(client.post("/api/runs", json=body), 422, "invalid_request")
    assert any(f["field"] == field and words in f["message"] for f in error["fields"]), error
    assert field in error["message"]
    assert daemon.engines_made == 0


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


def test_credentials_in_a_rejected_request_are_not_echoed(client: TestClient) -> None:
    body = {"image": "Bad Ref", "registry_auth": {"username": "u", "password": "hunter2-xyz"}}
    response = client.post("/api/runs", json=body)
    assert response.status_code == 422
    assert "hunter2-xyz" not in response.text


# -- listing ------------------------------------------------------------------------------------


def test_list_is_newest_first_filtered_and_paginated(
    client: TestClient, daemon: FakeDocker
) -> None:
    for code in (0, 1):
        daemon.program(["sh", "-c", f"exit {code}"], Program(exit_code=code))
    ids = []
    for code in (0, 1, 0, 1, 0):
        run = run_to_end(client, command=["sh", "-c", f"exit {code}"])
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
    assert_error(client.get("/api/runs", params={"status": "nonsense"}), 422, "invalid_request")
    assert_error(client.get("/api/runs", params={"limit": 0}), 422, "invalid_request")
    assert client.get("/api/runs", params={"cursor": "nosuchrun"}).json()["runs"] == []


def test_run_object_shape(client: TestClient, daemon: FakeDocker) -> None:
    daemon.program(["echo", "two words"], Program(output=[stdout(b"two words\n")]))
    run = run_to_end(client, command="echo 'two words'", env={"A": "1"})
    assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["error"] is None
    assert run["spec"]["command"] == ["echo", "two words"]
    assert run["spec"]["env"] == {"A": "1"}
    assert client.get(run["links"]["logs"]).text == "two words\n"
    for key in ("created_at", "started_at", "finished_at", "container_id", "image_digest"):
        assert run[key], key
    assert set(run["durations"]) == {"queue", "pull", "create", "start", "run", "total"}
    assert run["durations"]["pull"] is None  # present image, policy missing
    assert run["pull"] == {"policy": "missing", "pulled": False}
    events = decode_events(client.get(run["links"]["events"]).content)
    assert run["last_event_id"] == len(events) == events[-1].number
    assert run["links"] == {
        "self": f"/api/runs/{run['id']}",
        "events": f"/api/runs/{run['id']}/events",
        "logs": f"/api/runs/{run['id']}/logs",
        "page": f"/runs/{run['id']}",
    }
    assert "registry_auth" not in run["spec"]


def test_logs_per_stream(client: TestClient, daemon: FakeDocker) -> None:
    daemon.program(["talk"], Program(output=[recorded_attach("multiplexed")]))
    run = run_to_end(client, command=["talk"])
    logs = run["links"]["logs"]
    assert client.get(logs).text == "out\nerr\nout2\nno newline\n"
    assert client.get(logs, params={"stream": "stderr"}).text == "err\n"
    assert client.get(logs, params={"stream": "stdout"}).text == "out\nout2\nno newline\n"
    assert_error(client.get(logs, params={"stream": "stdin"}), 422, "invalid_request")
    assert_error(client.get("/api/runs/nosuchrun/logs"), 404, "not_found")


def test_finished_events_replay_and_204_after_done(client: TestClient) -> None:
    run = run_to_end(client, command=["true"])
    url = run["links"]["events"]
    whole = client.get(url)
    assert whole.headers["content-type"].startswith("text/event-stream")
    events = decode_events(whole.content)
    assert events[-1].type == "done" and events[-1].data["status"] == "succeeded"
    after = decode_events(client.get(url, params={"after": 2}).content)
    assert [e.number for e in after] == list(range(3, len(events) + 1))
    last = str(len(events))
    assert client.get(url, headers={"Last-Event-ID": last}).status_code == 204
    assert client.get(url, params={"after": len(events)}).status_code == 204
    assert_error(client.get("/api/runs/nosuchrun/events"), 404, "not_found")


# -- cancel, delete ------------------------------------------------------------------------------


def test_cancel_is_202_then_409_once_finished(client: TestClient, daemon: FakeDocker) -> None:
    run = start(client, command=hang(daemon))
    wait_until(
        lambda: client.get(run["links"]["self"]).json()["status"] == "running", "the run to run"
    )
    response = client.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 202 and response.json()["id"] == run["id"]
    final = finished(client, run["id"])
    assert final["status"] == "canceled"
    assert final["error"] == {"phase": "run", "message": "canceled by request"}
    assert_error(client.post(f"/api/runs/{run['id']}/cancel"), 409, "conflict", "finished")
    assert_error(client.post("/api/runs/nosuchrun/cancel"), 404, "not_found")


def test_delete_finished_run_only(client: TestClient, daemon: FakeDocker) -> None:
    active = start(client, command=hang(daemon))
    assert_error(client.delete(active["links"]["self"]), 409, "conflict", "still active")
    client.post(f"/api/runs/{active['id']}/cancel")
    finished(client, active["id"])
    kept = run_to_end(client, command=["true"], auto_remove=False)
    assert [c.id for c in daemon.live_containers()] == [kept["container_id"]]
    assert client.delete(kept["links"]["self"]).status_code == 204
    assert daemon.live_containers() == []
    assert_error(client.get(kept["links"]["self"]), 404, "not_found", kept["id"])
    assert_error(client.get(kept["links"]["events"]), 404, "not_found")
    assert_error(client.delete(kept["links"]["self"]), 404, "not_found")


# -- limits and errors ---------------------------------------------------------------------------


def test_a_full_queue_is_429(settings: Settings, daemon: FakeDocker) -> None:
    limited = settings.model_copy(update={"max_concurrent_runs": 1, "max_queued_runs": 0})
    headers = bearer(make_token(limited))
    with TestClient(create_app(limited, engine_factory=daemon), headers=headers) as client:
        try:
            first = start(client, command=hang(daemon))
            error = assert_error(client.post("/api/runs", json={"image": BASE}), 429, "queue_full")
            assert "max_queued_runs" in error["message"]
            wait_until(
                lambda: client.get(first["links"]["self"]).json()["status"] == "running",
                "the first run to run",
            )
            stats = client.get("/api/stats").json()
            assert (stats["active_runs"], stats["queued_runs"]) == (1, 0)
            assert stats["threads"] > 0 and stats["subscribers"] == 0
            client.post(f"/api/runs/{first['id']}/cancel")
            finished(client, first["id"])
        finally:
            daemon.close()


def test_a_server_shutting_down_accepts_no_run(client: TestClient) -> None:
    runner = client.app.state.runner  # type: ignore[attr-defined]
    client.portal.call(runner.shutdown)  # type: ignore[union-attr]
    assert_error(client.post("/api/runs", json={"image": BASE}), 503, "shutting_down")


def test_unknown_routes_and_methods_have_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/api/nosuch"), 404, "not_found")
    assert_error(client.get("/api/runs/nosuchrun"), 404, "not_found", "no run with id 'nosuchrun'")
    assert_error(client.put("/api/runs"), 405, "method_not_allowed")
    page = client.get("/runs/nosuchrun", headers={"accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


# -- health -------------------------------------------------------------------------------------


def test_health_and_readiness_with_an_engine_that_answers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    version = recorded_version()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "engine": version["Version"],
        "api": version["ApiVersion"],
    }


def test_readyz_is_503_when_the_engine_is_unreachable(
    client: TestClient, daemon: FakeDocker, settings: Settings
) -> None:
    daemon.down = True
    assert client.get("/healthz").status_code == 200
    error = assert_error(client.get("/readyz"), 503, "engine_unavailable")
    assert error["message"] == recorded_errors()["engine-unreachable"]["message"]
    # A run waits for the engine (saying so), and runs once it answers again.
    run = start(client)
    wait_until(
        lambda: any(
            "waiting for an engine" in e.data.get("message", "")
            for e in events_of(settings, run["id"])
            if e.type == "notice"
        ),
        "a notice that the run waits for its engine",
    )
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "queued"
    daemon.down = False
    assert client.get("/readyz").status_code == 200
    ended = finished(client, run["id"])
    assert ended["status"] == "succeeded", ended["error"]
    assert ended["engine"] == "local"


def test_readyz_tells_anyone_not_signed_in_only_whether_the_engine_answers(
    client: TestClient, daemon: FakeDocker
) -> None:
    anonymous = {k: v for k, v in client.headers.items() if k.lower() != "authorization"}
    client.headers.clear()
    client.headers.update(anonymous)
    assert client.get("/readyz").json() == {"status": "ok"}
    daemon.down = True
    error = assert_error(client.get("/readyz"), 503, "engine_unavailable")
    assert error["message"] == "the engine does not answer (sign in for details)"
    assert recorded_errors()["engine-unreachable"]["message"] not in error["message"]


def test_readyz_is_503_when_the_engine_does_not_answer_in_time(
    client: TestClient, daemon: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "READY_TIMEOUT", 0.001)
    daemon.hold("version")  # never released: the engine keeps the ping waiting
    assert_error(client.get("/readyz"), 503, "engine_unavailable", "did not answer within 0.001s")


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/events", "/api/events"):
        assert path in spec["paths"]
    assert "registry_auth" in spec["components"]["schemas"]["RunCreate"]["properties"]
    assert "registry_auth" not in spec["components"]["schemas"]["RunRecord"]["properties"]
    assert client.get("/docs").status_code == 200
