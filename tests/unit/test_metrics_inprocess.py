"""GET /metrics in-process (create_app with the in-memory engine): the counts
move with the runs, the gauges follow the runner, the labels stay bounded,
and each app has a registry of its own. The real server's scrape around real
runs: tests/integration/test_metrics.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.engines.fake import FakeDocker, Program, PullScript, recorded_pull, stderr, stdout
from backend.models import RunStatus
from backend.settings import Settings
from backend.web.app import create_app
from tests.support.metrics import Samples, scrape, value
from tests.unit.conftest import BASE, LAYERS, bearer, make_token, wait_until


@pytest.fixture
def client(settings: Settings, daemon: FakeDocker) -> Iterator[TestClient]:
    headers = bearer(make_token(settings, "viewer-1", "viewer"))
    operator = bearer(make_token(settings, "operator-1", "operator"))
    with TestClient(create_app(settings, engine_factory=daemon), headers=headers) as test_client:
        test_client.operator = operator  # type: ignore[attr-defined]
        try:
            yield test_client
        finally:
            daemon.close()


def settings_of(client: TestClient) -> Settings:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return settings


def run_to_end(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("image", BASE)
    response = client.post("/api/runs", json=body, headers=client.operator)  # type: ignore[attr-defined]
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]

    def ended() -> dict[str, Any] | None:
        got: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        return got if RunStatus(got["status"]).terminal else None

    record = wait_until(ended, f"run {run_id} to end")
    wait_until(lambda: client.get("/api/stats").json()["active_runs"] == 0, "no active runs")
    return record


def test_the_counts_move_with_the_runs(client: TestClient, daemon: FakeDocker) -> None:
    wait_until(lambda: value(scrape(client), "pullrun_engine_up", engine="local") == 1, "up")
    before = scrape(client)
    assert value(before, "pullrun_runs_started_total", engine="local") == 0
    assert value(before, "pullrun_events_appended_total") == 0
    assert value(before, "pullrun_runs_queued") == 0
    assert value(before, "pullrun_runs_active", engine="local") == 0
    slots = settings_of(client).max_concurrent_runs
    assert value(before, "pullrun_engine_slots", engine="local") == slots

    daemon.program(["talk"], Program(output=[stdout(b"one\ntwo\n"), stderr(b"three\n")]))
    daemon.program(["fail"], Program(output=[stdout(b"bye\n")], exit_code=3))
    daemon.script_pull(LAYERS, PullScript(recorded_pull("recorded-layers-one-cached")))
    runs = [
        run_to_end(client, command=["talk"]),
        run_to_end(client, command=["fail"]),
        run_to_end(client, image=LAYERS, command=["talk"]),
    ]
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    pulled = runs[2]

    # (a run's end is counted just before it stops being active: no wait needed)
    after = scrape(client)
    assert value(after, "pullrun_runs_started_total", engine="local") == 3
    finished = "pullrun_runs_finished_total"
    assert value(after, finished, status="succeeded", engine="local") == 2
    assert value(after, finished, status="failed", engine="local") == 1
    assert value(after, "pullrun_run_duration_seconds_count", engine="local") == 3
    total = sum(r["durations"]["total"] for r in runs)
    assert value(after, "pullrun_run_duration_seconds_sum", engine="local") == pytest.approx(total)
    assert value(after, "pullrun_pull_duration_seconds_count", engine="local") == 1
    assert value(after, "pullrun_pull_duration_seconds_sum", engine="local") == pytest.approx(
        pulled["durations"]["pull"]
    )
    assert pulled["pull"]["bytes_total"] > 0
    assert value(after, "pullrun_pull_bytes_total", engine="local") == pulled["pull"]["bytes_total"]
    assert (
        value(after, "pullrun_log_lines_total", engine="local")
        == sum(r["log_lines"] for r in runs)
        == 7
    )
    assert value(after, "pullrun_log_bytes_total", engine="local") == sum(
        r["log_bytes"] for r in runs
    )
    # Every event of every log, each counted once as it was written.
    assert value(after, "pullrun_events_appended_total") == sum(r["last_event_id"] for r in runs)
    wait_until(
        lambda: value(scrape(client), "pullrun_runs_active", engine="local") == 0, "slots freed"
    )


def test_the_gauges_follow_the_runner(client: TestClient, daemon: FakeDocker) -> None:
    hold = daemon.gate("forever")
    daemon.program(["wait"], Program(output=[stdout(b"started\n"), hold]))
    response = client.post(
        "/api/runs",
        json={"image": BASE, "command": ["wait"]},
        headers=client.operator,  # type: ignore[attr-defined]
    )
    run_id = response.json()["id"]
    hold.wait_reached()
    samples = scrape(client)
    assert value(samples, "pullrun_runs_active", engine="local") == 1
    assert value(samples, "pullrun_runs_finished_total", status="succeeded", engine="local") == 0
    with client.stream("GET", f"/api/runs/{run_id}/events") as events:
        assert events.status_code == 200
        wait_until(
            lambda: value(scrape(client), "pullrun_sse_subscribers", stream="run") == 1,
            "the stream to be counted",
        )
        cancel = client.post(f"/api/runs/{run_id}/cancel", headers=client.operator)  # type: ignore[attr-defined]
        assert cancel.status_code == 202, cancel.text
        for _ in events.iter_lines():  # to its `done`, then the stream ends
            pass

    def canceled() -> Samples | None:
        samples = scrape(client)
        counted = value(samples, "pullrun_runs_finished_total", status="canceled", engine="local")
        freed = value(samples, "pullrun_runs_active", engine="local") == 0  # (its slot, then)
        return samples if counted == 1 and freed else None

    wait_until(canceled, "the cancel to be counted and its slot freed")


def test_labels_carry_no_request_input(client: TestClient, daemon: FakeDocker) -> None:
    daemon.program(["talk"], Program(output=[stdout(b"hi\n")]))
    run_to_end(client, command=["talk"], labels={"team": "secret-label"}, env={"A": "b"})
    refused = client.post(
        "/api/runs",
        json={"image": BASE, "engine": "no-such-engine"},
        headers=client.operator,  # type: ignore[attr-defined]
    )
    assert refused.status_code == 422
    text = client.get("/metrics").text
    assert "secret-label" not in text and "no-such-engine" not in text and BASE not in text
    allowed = {"local", "", "run", "feed", *(s.value for s in RunStatus)}
    for _name, labels in scrape(client):
        assert {v for k, v in labels if k not in ("le",)} <= allowed, labels


def test_each_app_counts_its_own_runs(settings: Settings, daemon: FakeDocker) -> None:
    token = bearer(make_token(settings))
    daemon.program(["talk"], Program(output=[stdout(b"hi\n")]))
    with TestClient(create_app(settings, engine_factory=daemon), headers=token) as first:
        first.operator = token  # type: ignore[attr-defined]
        run_to_end(first, command=["talk"])
        assert value(scrape(first), "pullrun_runs_started_total", engine="local") == 1
    with TestClient(create_app(settings, engine_factory=daemon), headers=token) as second:
        assert value(scrape(second), "pullrun_runs_started_total", engine="local") == 0


def test_metrics_need_sign_in(client: TestClient) -> None:
    anonymous = client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401  # a scraper gets a 401, never the sign-in page
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
