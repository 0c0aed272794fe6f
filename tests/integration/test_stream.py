"""The event stream: resume without gap or duplicate, 204 after done, the
global feed, and subscribers that go away."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.runs import run_to_end, start
from tests.support.server import ServerProcess
from tests.support.sse import collect, iter_events, log_lines

TICKER = ["sh", "-c", "for i in $(seq 1 30); do echo line$i; sleep 0.05; done"]


def raw_stream(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> bytes:
    with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        return b"".join(response.iter_raw())


def test_event_ids_and_wire_format(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command=["echo", "x"])
    raw = raw_stream(client, run["links"]["events"])
    body = b"".join(
        block + b"\n\n" for block in raw.split(b"\n\n") if block and not block.startswith(b":")
    )
    assert body.count(b"\n\n") == len(events)
    for block in body.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        assert lines[0].startswith(b"id: ") and lines[1].startswith(b"event: ")
        assert lines[2].startswith(b"data: ") and len(lines) == 3
    assert run["last_event_id"] == len(events)


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    client: httpx.Client, image: str
) -> None:
    record = start(client, image=image, command=TICKER)
    url = record["links"]["events"]
    seen = collect(client, url, until="log")  # disconnect after the first log event
    while True:
        more = collect(client, url, headers={"Last-Event-ID": seen[-1].id}, limit=3)
        assert int(more[0].id) == int(seen[-1].id) + 1
        seen.extend(more)
        if seen[-1].type == "done":
            break
    assert [int(e.id) for e in seen] == list(range(1, len(seen) + 1))
    assert log_lines(seen) == [f"line{i}" for i in range(1, 31)]
    # A full replay is the same sequence.
    replay = collect(client, url)
    assert [(e.id, e.type, e.data) for e in replay] == [(e.id, e.type, e.data) for e in seen]


def test_after_query_and_header_precedence(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command=["seq", "1", "5"])
    tail = collect(client, run["links"]["events"], params={"after": 2})
    assert [e.id for e in tail] == [e.id for e in events[2:]]
    both = collect(
        client, run["links"]["events"], params={"after": 1}, headers={"Last-Event-ID": "3"}
    )
    assert both[0].id == "4"


def test_reconnect_after_done_gets_204(client: httpx.Client, image: str) -> None:
    run, events = run_to_end(client, image=image, command=["true"])
    response = client.get(run["links"]["events"], headers={"Last-Event-ID": events[-1].id})
    assert response.status_code == 204
    assert client.get(run["links"]["events"], params={"after": events[-1].id}).status_code == 204


def test_unknown_run_is_404_json(client: httpx.Client) -> None:
    for path in ("/api/runs/nope", "/api/runs/nope/events", "/api/runs/nope/logs"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_run_feed_streams_changes_and_resumes(client: httpx.Client, image: str) -> None:
    with client.stream("GET", "/api/events", timeout=60) as response:
        assert response.status_code == 200
        record = start(client, image=image, command=["echo", "feed"])
        statuses: list[str] = []
        last_id = ""
        for event in iter_events(response):
            assert event.type == "run"
            if event.data["id"] != record["id"]:
                continue
            statuses.append(event.data["status"])
            last_id = event.id
            if event.data["status"] == "running":
                break
    assert statuses[0] == "queued" and "running" in statuses
    # Resume: what happened since last_id comes first, ending with the terminal state.
    resumed = collect(
        client, "/api/events", headers={"Last-Event-ID": last_id}, until="run", limit=50, timeout=30
    )
    assert resumed[0].type == "run"
    later: list[str] = []
    with client.stream(
        "GET", "/api/events", headers={"Last-Event-ID": last_id}, timeout=30
    ) as response:
        for event in iter_events(response):
            if event.data.get("id") == record["id"]:
                later.append(event.data["status"])
                if event.data["status"] == "succeeded":
                    break
    assert later[-1] == "succeeded"
    # An id this server never issued: reset first.
    stale = collect(client, "/api/events", headers={"Last-Event-ID": "deadbeef-5"}, limit=1)
    assert stale[0].type == "reset"


def test_subscriber_that_disconnects_leaves_nothing_behind(
    server: ServerProcess, client: httpx.Client, image: str
) -> None:
    before = client.get("/api/stats").json()
    record = start(
        client,
        image=image,
        command=["sh", "-c", "trap 'exit 143' TERM; while true; do echo tick; sleep 0.1; done"],
    )
    for _ in range(5):
        collect(client, record["links"]["events"], until="log")
    with client.stream("GET", "/api/events") as response:
        next(response.iter_raw(), None)
    deadline = time.monotonic() + 10
    stats = client.get("/api/stats").json()
    while stats["subscribers"] != before["subscribers"] and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = client.get("/api/stats").json()
    assert stats["subscribers"] == before["subscribers"]
    client.post(f"/api/runs/{record['id']}/cancel")
    collect(client, record["links"]["events"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = client.get("/api/stats").json()
        if stats["threads"] <= before["threads"] and stats["active_runs"] == 0:
            break
        time.sleep(0.1)
    assert stats["active_runs"] == 0
    assert stats["threads"] <= before["threads"], (before, stats)


def test_a_subscriber_that_never_reads_does_not_slow_the_run(
    client: httpx.Client, server: ServerProcess, image: str
) -> None:
    import socket

    record = start(client, image=image, command=["sh", "-c", "sleep 0.5; seq 1 300000"])
    stuck = socket.create_connection(("127.0.0.1", server.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(f"GET {record['links']['events']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        started = time.monotonic()
        events = collect(client, record["links"]["events"], timeout=60)
        elapsed = time.monotonic() - started
        assert events[-1].data["status"] == "succeeded"
        assert log_lines(events) == [str(i) for i in range(1, 300001)]
        assert elapsed < 20, elapsed
    finally:
        stuck.close()


def test_keepalive_comments_on_a_quiet_stream(tmp_path: Path, image: str) -> None:
    with (
        ServerProcess(tmp_path / "data", keepalive=0.5) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        record = start(client, image=image, command=["sleep", "3"])
        comments = 0
        with client.stream("GET", record["links"]["events"], timeout=30) as response:
            for chunk in response.iter_raw():
                comments += chunk.count(b": ping")
                if b"event: done" in chunk:
                    break
        assert comments >= 3


def test_feed_announces_deleted_runs(client: httpx.Client, image: str) -> None:
    run, _ = run_to_end(client, image=image, command=["true"])
    with client.stream("GET", "/api/events", timeout=30) as response:
        assert client.delete(run["links"]["self"]).status_code == 204
        for event in iter_events(response):
            if event.type == "deleted":
                assert event.data == {"id": run["id"]}
                break
