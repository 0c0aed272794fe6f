"""GET /api/runs/{id}/snapshot and GET /api/runs/{id}/lines in-process (the
in-memory engine): a live run's partial line, paging back to line 1 (every
line once, in order, as the download has them), the bounds and the errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.engines.fake import FakeDocker, Program, stderr, stdout
from backend.settings import Settings
from backend.storage.eventlog import EventLog
from tests.unit.conftest import wait_until
from tests.unit.test_api_inprocess import assert_error, finished, start


def page_back(client: TestClient, run_id: str, limit: int) -> list[dict[str, Any]]:
    """The snapshot's lines, then every earlier page back to line 1."""
    snap = client.get(f"/api/runs/{run_id}/snapshot").json()
    got: list[dict[str, Any]] = snap["lines"]
    before, earlier = snap["first_line"], snap["earlier"]
    while earlier:
        page = client.get(f"/api/runs/{run_id}/lines", params={"before": before, "limit": limit})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["lines"] and body["lines"][-1]["n"] == before - 1
        got[:0] = body["lines"]
        before, earlier = body["first"], body["earlier"]
    return got


def test_a_live_partial_line_then_every_line_once_paging_back(
    client: TestClient, daemon: FakeDocker
) -> None:
    gate = daemon.gate()
    many = b"".join(b"err %d\n" % i for i in range(1, 2501))
    output = [stdout(b"a\nhalf"), gate, stderr(many), stdout(b"-done\n" + b"out\n" * 700 + b"end")]
    daemon.program(["talk"], Program(output=output))
    run_id = start(client, command=["talk"])["id"]
    gate.wait_reached()

    def partial() -> dict[str, Any] | None:
        snap: dict[str, Any] = client.get(f"/api/runs/{run_id}/snapshot").json()
        return snap if snap["lines"] and snap["lines"][-1]["partial"] else None

    snap = wait_until(partial, "the partial line in the snapshot")
    assert [(x["n"], x["stream"], x["text"]) for x in snap["lines"]] == [
        (1, "stdout", "a"),
        (2, "stdout", "half"),
    ]
    assert snap["first_line"] == 1 and snap["earlier"] is False and snap["done"] is None
    lines = client.get(f"/api/runs/{run_id}/lines").json()
    assert lines == {"lines": snap["lines"], "first": 1, "earlier": False}
    gate.release()
    finished(client, run_id)

    for limit in (1000, 333, 5000):
        got = page_back(client, run_id, limit)
        assert [x["n"] for x in got] == list(range(1, 2 + 2500 + 700 + 1 + 1))
        assert not any(x["partial"] for x in got)
        assert got[1] == {**got[1], "text": "half-done", "stream": "stdout"}
        for stream in ("stdout", "stderr"):
            text = client.get(f"/api/runs/{run_id}/logs", params={"stream": stream}).text
            assert text == "".join(x["text"] + "\n" for x in got if x["stream"] == stream)
    snap = client.get(f"/api/runs/{run_id}/snapshot").json()
    assert len(snap["lines"]) == 1000 and snap["first_line"] == snap["total_lines"] - 999
    assert snap["done"]["status"] == "succeeded" and snap["earlier"] is True
    past = client.get(f"/api/runs/{run_id}/lines", params={"before": 10**12, "limit": 2}).json()
    assert [x["text"] for x in past["lines"]] == ["out", "end"] and past["earlier"] is True
    first = client.get(f"/api/runs/{run_id}/lines", params={"before": 1}).json()
    assert first == {"lines": [], "first": 1, "earlier": False}


@pytest.mark.parametrize(
    "params",
    [
        {"before": 0},
        {"before": -1},
        {"before": "x"},
        {"before": 2**53 + 1},
        {"limit": 0},
        {"limit": 5001},
        {"limit": "many"},
    ],
)
def test_lines_out_of_bounds_are_422(client: TestClient, params: dict[str, Any]) -> None:
    run_id = start(client, command=["true"])["id"]
    response = client.get(f"/api/runs/{run_id}/lines", params=params)
    assert_error(response, 422, "invalid_request", next(iter(params)))


def test_an_unknown_run_is_404(client: TestClient) -> None:
    for path in ("/api/runs/nosuchrun/snapshot", "/api/runs/nosuchrun/lines?before=5"):
        assert_error(client.get(path), 404, "not_found")


def test_the_run_record_never_reads_the_event_file(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start(client, command=["true"])["id"]
    record = finished(client, run_id)

    def no_log(*_: object) -> None:
        raise AssertionError("the event log was read")

    monkeypatch.setattr(EventLog, "load", no_log)
    monkeypatch.setattr(EventLog, "index", no_log)
    settings.events_file(run_id).unlink()
    assert client.get(f"/api/runs/{run_id}").json() == record
