"""Hostile inputs from schemathesis, generated from the server's own OpenAPI
schema and sent with an admin token to the real server: whatever comes in, no
500, no stack trace, and no secret in any answer.

- Each operation alone (the event streams, which never end on their own, left
  out), a bounded number of examples each.
- Stateful: sequences that follow the schema's OpenAPI links (docs/api.md):
  a run started by `POST /api/runs` is then read, canceled, deleted and its
  log fetched, with hostile inputs at every step. Only the schema's own links
  are followed (schemathesis' link inference is off: links it would infer
  from `GET /api/runs` depend on every run made so far, which makes
  Hypothesis' replays differ). The image of each start is the local sample
  image, so that runs are accepted and the links have a run to follow.
- The two event streams: garbage, huge, negative and non-ASCII resume points
  (`Last-Event-ID`, `after`) and run ids, each answered by a clear 4xx, a
  204 or a stream that starts at once (read with a short deadline).

The server under test only lets runs use images of the local registry, so
no generated run sends a byte outside 127.0.0.0/8.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.runs import SLEEPER, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.sse import iter_events
from tests.support.wait import wait_for_status, wait_until

SECRET_ENV = "fuzz-secret-env-6b1f0c"
EXAMPLES = 30  # per operation
SCENARIOS = 100  # stateful: sequences of linked calls
STEPS = 10  # stateful: calls per sequence at most
KEEPALIVE = 0.5  # seconds: a stream with nothing to send yet still starts at once
STREAM_DEADLINE = httpx.Timeout(10, read=5)  # per read: several keepalives

# Resume points for both streams: not numbers, huge, negative, fractions,
# other digits, non-ASCII, and past the length limit (64).
HOSTILE_EVENT_IDS: list[str | bytes] = [
    "garbage",
    "",
    "3 4",
    "3\t4",  # (leading and trailing blanks never reach a server: HTTP strips them)
    "-1",
    "-99999999999999999999",
    "9" * 64,
    "9" * 65,
    "1e9",
    "1.5",
    "0x10",
    "nan",
    "1-2",
    "abc-5",
    "\u0663",  # ARABIC-INDIC DIGIT THREE (sent as UTF-8 bytes)
    "\uff15",  # FULLWIDTH DIGIT FIVE
    "\u00e9t\u00e9",
    b"\xff\xfe\x80",  # not UTF-8 at all
]
HOSTILE_AFTER = [
    "garbage",
    "",
    "-1",
    "-99999999999999999999",
    "9" * 30,
    "9" * 5000,  # past Python's digit limit for int()
    "1e3",
    "1.5",
    "\u0663",
    "\uff15",
    "%FF",  # a percent-escape that is not UTF-8
    "%00",
    "2",
]
# Run ids: `%2e%2e` reaches the server as `..` (a client resolves a plain `..` itself).
HOSTILE_RUN_IDS = [
    "nope",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc",
    "\u00e9" * 40,
    "x" * 5000,
    "%00",
    "-1",
]


@pytest.fixture(scope="module")
def fuzz_server(session_server_factory: ServerFactory, registry: str) -> Iterator[ServerProcess]:
    server = session_server_factory(
        allowed_images=f"{registry}/*",
        max_concurrent_runs=2,
        max_queued_runs=100_000,  # a start is refused for its body only, never for the queue
        keepalive=KEEPALIVE,
    )
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
    # The runs the fuzzing started, queued or running, go with it (a graceful stop).
    server.stop()


@pytest.fixture(scope="module")
def finished_run(fuzz_server: ServerProcess, registry: str) -> str:
    """A run that has ended, with a few events to replay."""
    with fuzz_server.client() as client:
        run = start(client, image=f"{registry}/pullrun/busybox:latest", command="echo a; echo b")
        wait_for_status(client, run["id"], ("succeeded",))
    return str(run["id"])


def schema_of(server: ServerProcess) -> Any:
    schema = schemathesis.openapi.from_url(
        f"{server.base_url}/openapi.json", headers=server.headers()
    )
    return schema.exclude(path_regex=r"/events$")


def check_response(response: Any, method: str, path: str, server: ServerProcess) -> None:
    """An answer from schemathesis' transport (headers: name -> values)."""
    body = response.text
    assert response.status_code < 500, (method, path, response.status_code, body[:300])
    assert "Traceback" not in body and 'File "' not in body, body[:300]
    assert server.token is not None and server.token not in body
    assert SECRET_ENV not in body
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.startswith("application/json") and response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"], error


def hypothesis_settings(**extra: Any) -> settings:
    return settings(
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same inputs on every run: a failure is reproducible
        **extra,
    )


def test_hostile_inputs_never_break_the_server(fuzz_server: ServerProcess) -> None:
    found = [result.ok() for result in schema_of(fuzz_server).get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in found} >= {
        "POST /api/runs",
        "GET /api/runs",
        "GET /api/runs/{run_id}",
        "DELETE /api/runs/{run_id}",
    }
    calls: dict[str, int] = {}
    for operation in found:

        @hypothesis_settings(max_examples=EXAMPLES)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            label = f"{case.method.upper()} {case.path}"
            calls[label] = calls.get(label, 0) + 1
            response = case.call(
                base_url=fuzz_server.base_url, headers=fuzz_server.headers(), timeout=30
            )
            check_response(response, case.method, case.path, fuzz_server)

        check()
    assert all(calls.get(f"{op.method.upper()} {op.path}", 0) >= 1 for op in found), calls
    assert calls["POST /api/runs"] >= EXAMPLES // 2, calls


def open_stream(
    client: httpx.Client, url: str, headers: dict[str, Any], ends: bool, server: ServerProcess
) -> int:
    """One request to an event stream: a clear 4xx, a 204, or a stream that
    starts at once (a run's that `ends` is read to `done`); its status."""
    with client.stream("GET", url, headers=headers, timeout=STREAM_DEADLINE) as response:
        status = response.status_code
        what = (url[:120], headers, status)
        if status == 200:
            assert response.headers["content-type"].startswith("text/event-stream"), what
            if ends:  # a finished run: the rest of its events, strictly parsed, then the end
                events = list(iter_events(response))
                assert events and events[-1].type == "done", what
                assert [e.number for e in events] == list(
                    range(events[0].number, events[-1].number + 1)
                ), what
                return status
            first = next(response.iter_raw())  # an event or a keepalive comment
            assert first.startswith((b"id: ", b":")), (what, first[:100])
            return status
        body = response.read().decode(errors="replace")
        assert status == 204 or 400 <= status < 500, (what, body[:300])
        assert "Traceback" not in body and server.token is not None and server.token not in body
        if status != 204:
            error = response.json()["error"]
            assert error["code"] and error["message"], (what, error)
        return status


def test_hostile_resume_points_and_run_ids_on_the_event_streams(
    fuzz_server: ServerProcess, finished_run: str, registry: str
) -> None:
    statuses: Counter[int] = Counter()
    with fuzz_server.client() as client:
        image = f"{registry}/pullrun/busybox:latest"
        live = start(client, image=image, command=SLEEPER)["id"]  # queued or running: live
        targets = [
            (f"/api/runs/{finished_run}/events", True),
            (f"/api/runs/{live}/events", False),
            ("/api/events", False),
        ]
        for url, ends in targets:
            for value in HOSTILE_EVENT_IDS:
                raw = value if isinstance(value, bytes) else value.encode()
                headers = {"Last-Event-ID": raw}
                statuses[open_stream(client, url, headers, ends, fuzz_server)] += 1
            for after in HOSTILE_AFTER:
                query = f"{url}?after={after}"
                statuses[open_stream(client, query, {}, ends, fuzz_server)] += 1
                # Both: the header wins, the query is still checked.
                both = {"Last-Event-ID": b"2"}
                statuses[open_stream(client, query, both, ends, fuzz_server)] += 1
        for run_id in HOSTILE_RUN_IDS:
            url = f"/api/runs/{run_id}/events"
            statuses[open_stream(client, url, {}, False, fuzz_server)] += 1
            statuses[open_stream(client, url, {"Last-Event-ID": b"1"}, False, fuzz_server)] += 1
        assert client.post(f"/api/runs/{live}/cancel").status_code == 202
        wait_for_status(client, live, ("canceled",))
        # Every stream opened here was closed: none is left counted.
        wait_until(
            lambda: client.get("/api/stats").json()["subscribers"] == 0,
            "the event streams of the hostile requests to be closed",
        )
    assert {200, 204, 422} <= set(statuses), statuses


def test_hostile_sequences_along_the_links_never_break_the_server(
    fuzz_server: ServerProcess, registry: str
) -> None:
    schema = schema_of(fuzz_server)
    schema.config.phases.stateful.inference.algorithms = []  # the schema's own links only
    image = f"{registry}/pullrun/busybox:latest"
    answers: Counter[tuple[str, str, int]] = Counter()

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            if case.method == "POST" and case.path == "/api/runs" and isinstance(case.body, dict):
                case.body["image"] = image

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {
                "base_url": fuzz_server.base_url,
                "headers": fuzz_server.headers(),
                "timeout": 30,
            }

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            answers[(case.method.upper(), case.path, response.status_code)] += 1
            check_response(response, case.method, case.path, fuzz_server)

    Sequences.run(settings=hypothesis_settings(max_examples=SCENARIOS, stateful_step_count=STEPS))
    # The links were followed with real runs: each linked operation met one.
    for followed in (
        ("POST", "/api/runs", 201),
        ("GET", "/api/runs/{run_id}", 200),
        ("POST", "/api/runs/{run_id}/cancel", 202),
        ("DELETE", "/api/runs/{run_id}", 204),
        ("GET", "/api/runs/{run_id}/logs", 200),
    ):
        assert answers[followed] >= 1, (followed, answers)


def test_the_server_kept_serving(fuzz_server: ServerProcess) -> None:
    with fuzz_server.client() as client:
        assert client.get("/healthz").status_code == 200
        runs = client.get("/api/runs", params={"limit": 500})
        assert runs.status_code == 200
        assert SECRET_ENV not in runs.text
    assert "Traceback" not in fuzz_server.log()
    with httpx.Client(base_url=fuzz_server.base_url) as anonymous:
        assert anonymous.get("/api/runs").status_code == 401
