"""Hostile inputs from schemathesis, generated from the server's own OpenAPI
schema and sent with an admin token to the real server: whatever comes in, no
500, no stack trace, and no secret in any answer.

The server under test only lets runs use images of the local registry, so
no generated run sends a byte outside 127.0.0.0/8; the streaming routes
(which never end on their own) are left out. The number of examples is
bounded so that `make test` stays quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.server import ServerFactory, ServerProcess
from tests.support.wait import wait_for_status

SECRET_ENV = "fuzz-secret-env-6b1f0c"
EXAMPLES = 30  # per operation


@pytest.fixture(scope="module")
def fuzz_server(session_server_factory: ServerFactory, registry: str) -> Iterator[ServerProcess]:
    server = session_server_factory(allowed_images=f"{registry}/*", max_concurrent_runs=2)
    with server.client() as client:
        # A run that holds a secret, so that every answer can be checked for it.
        response = client.post(
            "/api/runs",
            json={
                "image": f"{registry}/pullrun/busybox:latest",
                "command": ["true"],
                "secret_env": {"S": SECRET_ENV},
            },
        )
        assert response.status_code == 201, response.text
        wait_for_status(client, response.json()["id"], ("succeeded", "failed", "error"))
    yield server


def operations(server: ServerProcess) -> list[Any]:
    schema = schemathesis.openapi.from_url(
        f"{server.base_url}/openapi.json", headers=server.headers()
    ).exclude(path_regex=r"/events$")
    return [result.ok() for result in schema.get_all_operations()]


def check_answer(case: Any, server: ServerProcess) -> None:
    response = case.call(base_url=server.base_url, headers=server.headers(), timeout=30)
    body = response.text
    assert response.status_code < 500, (case.method, case.path, response.status_code, body[:300])
    assert "Traceback" not in body and 'File "' not in body, body[:300]
    assert server.token is not None and server.token not in body
    assert SECRET_ENV not in body
    content_type = (response.headers.get("content-type") or [""])[0]  # header -> values
    if content_type.startswith("application/json") and response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"], error


def test_hostile_inputs_never_break_the_server(fuzz_server: ServerProcess) -> None:
    found = operations(fuzz_server)
    assert {f"{op.method.upper()} {op.path}" for op in found} >= {
        "POST /api/runs",
        "GET /api/runs",
        "GET /api/runs/{run_id}",
        "DELETE /api/runs/{run_id}",
    }
    calls: dict[str, int] = {}
    for operation in found:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same inputs on every run: a failure is reproducible
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            label = f"{case.method.upper()} {case.path}"
            calls[label] = calls.get(label, 0) + 1
            check_answer(case, fuzz_server)

        check()
    assert all(calls.get(f"{op.method.upper()} {op.path}", 0) >= 1 for op in found), calls
    assert calls["POST /api/runs"] >= EXAMPLES // 2, calls


def test_the_server_kept_serving(fuzz_server: ServerProcess) -> None:
    with fuzz_server.client() as client:
        assert client.get("/healthz").status_code == 200
        runs = client.get("/api/runs", params={"limit": 500})
        assert runs.status_code == 200
        assert SECRET_ENV not in runs.text
    assert "Traceback" not in fuzz_server.log()
    with httpx.Client(base_url=fuzz_server.base_url) as anonymous:
        assert anonymous.get("/api/runs").status_code == 401
