"""GET /api/runs?status=...: repeated and comma-separated statuses are the same
filter; an unknown status is a 422 naming it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backend.engines.fake import FakeDocker, Program
from tests.unit.test_api_inprocess import assert_error, finished, start


def ids(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/api/runs?{query}")
    assert response.status_code == 200, response.text
    return [run["id"] for run in response.json()["runs"]]


def test_repeated_and_comma_separated_statuses_filter_alike(
    client: TestClient, daemon: FakeDocker
) -> None:
    for code in (0, 1, 2):
        daemon.program(["sh", "-c", f"exit {code}"], Program(exit_code=code))
    ok, bad, worse = (start(client, command=["sh", "-c", f"exit {c}"])["id"] for c in (0, 1, 2))
    for run_id in (ok, bad, worse):
        finished(client, run_id)
    assert ids(client, "status=failed") == [worse, bad]
    assert ids(client, "status=succeeded&status=failed") == [worse, bad, ok]
    assert ids(client, "status=succeeded,failed") == [worse, bad, ok]
    assert ids(client, "status=succeeded, failed&status=error") == [worse, bad, ok]
    assert ids(client, "status=canceled") == []


def test_an_unknown_status_is_named(client: TestClient) -> None:
    error = assert_error(client.get("/api/runs?status=failed,nope"), 422, "invalid_request")
    assert "'nope'" in error["message"] and "succeeded" in error["message"], error
    assert error["fields"][0]["field"] == "status"
    assert_error(client.get("/api/runs?status="), 422, "invalid_request", "''")
