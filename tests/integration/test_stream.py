"""The event stream: resume without gap or duplicate, 204 after done, the
global feed, and subscribers that go away."""

from __future__ import annotations

import http.client
import re
import socket

import docker
import httpx

from tests.support.runs import SLEEPER, gate, open_gate, run_to_end, start
from tests.support.server import ServerFactory, ServerProcess
from tests.support.sse import log_lines
from tests.support.wait import Deadline, collect, events_of, wait_for_status, wait_until

TICKER = ["sh", "-c", "for i in $(seq 1 30); do echo line$i; sleep 0.05; done"]


def raw_stream(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> bytes:
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        return b"".join(Deadline(f"the replay of {url}").chunks(response))


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
    with client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        record = start(client, image=image, command=["echo", "feed"])
        statuses: list[str] = []
        last_id = ""
        for event in Deadline(f"run {record['id']} running on the feed").events(response):
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
        client, "/api/events", headers={"Last-Event-ID": last_id}, until="run", limit=50
    )
    assert resumed[0].type == "run"
    later: list[str] = []
    with client.stream("GET", "/api/events", headers={"Last-Event-ID": last_id}) as response:
        for event in Deadline(f"run {record['id']} succeeded on the feed").events(response):
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
    seen: list[dict[str, int]] = []

    def stats() -> dict[str, int]:
        seen.append(client.get("/api/stats").json())
        return seen[-1]

    wait_until(
        lambda: stats()["subscribers"] == before["subscribers"],
        f"the subscriber count to return to {before['subscribers']} (before: {before})",
    )
    client.post(f"/api/runs/{record['id']}/cancel")
    collect(client, record["links"]["events"])
    wait_until(
        lambda: (s := stats())["active_runs"] == 0 and s["threads"] <= before["threads"],
        f"no active run and at most {before['threads']} threads (before: {before})",
    )
    assert seen[-1]["active_runs"] == 0
    assert seen[-1]["threads"] <= before["threads"], (before, seen[-1])


def test_a_subscriber_that_never_reads_does_not_slow_the_run(
    client: httpx.Client, server: ServerProcess, image: str, docker_api: docker.APIClient
) -> None:
    """A subscriber that reads nothing: the run goes on to its end and another
    subscriber gets all of it meanwhile. The output (8.5 MB of events) is more
    than the kernel buffers between server and subscriber hold (4 MB), so the
    server really is held up sending to it; yet it is not dropped to make way
    (the server gives up on a send only after 30 s, far more than this run
    needs): once it reads, it gets the whole stream too."""
    count = 1_000_000
    before = client.get("/api/stats").json()
    record = start(client, image=image, command=["sh", "-c", f"{gate()}; seq 1 {count}"])
    url = record["links"]["events"]
    stuck = socket.create_connection(("127.0.0.1", server.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    credentials = "".join(f"{k}: {v}\r\n" for k, v in server.headers().items())
    stuck.sendall(
        f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{credentials}"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        wait_until(
            lambda: client.get("/api/stats").json()["subscribers"] == before["subscribers"] + 1,
            "the subscriber that never reads to be counted",
        )
        open_gate(docker_api, record["id"])
        events = collect(client, url)
        assert events[-1].data["status"] == "succeeded"
        assert log_lines(events) == [str(i) for i in range(1, count + 1)]
        # The run is over, and the stuck subscriber, not having read a byte, is
        # still being served (neither finished nor dropped).
        assert client.get(record["links"]["self"]).json()["status"] == "succeeded"
        wait_until(
            lambda: client.get("/api/stats").json()["subscribers"] == before["subscribers"] + 1,
            "only the subscriber that never reads to be left",
        )
        stuck.settimeout(30)
        response = http.client.HTTPResponse(stuck)
        response.begin()
        assert response.status == 200
        late = events_of(response.read())
        assert [(e.id, e.type, e.data) for e in late] == [(e.id, e.type, e.data) for e in events]
    finally:
        stuck.close()


def test_keepalive_comments_on_a_quiet_stream(server_factory: ServerFactory, image: str) -> None:
    server = server_factory(keepalive=0.5)
    with server.client() as client:
        record = start(client, image=image, command=SLEEPER)  # "started", then silence
        wait_for_status(client, record["id"], "running")
        received = b""
        canceled = False
        with client.stream("GET", record["links"]["events"]) as response:
            deadline = Deadline(f"3 keepalive comments, then `done`, on run {record['id']}")
            for chunk in deadline.chunks(response):
                received += chunk
                if not canceled and received.count(b": ping") >= 3:
                    assert client.post(f"/api/runs/{record['id']}/cancel").status_code == 202
                    canceled = True
                if b"event: done" in received:
                    break
        assert canceled, received[-300:]
        assert received.count(b": ping") >= 3
        assert b"\r" not in received  # every line ends in LF, keepalives too
        assert all(line.endswith(b"\n\n") for line in re.findall(rb": ping[^\n]*\n+", received))
        assert b"event: done" in received
        assert client.get(record["links"]["self"]).json()["status"] == "canceled"


def test_feed_announces_deleted_runs(client: httpx.Client, image: str) -> None:
    run, _ = run_to_end(client, image=image, command=["true"])
    with client.stream("GET", "/api/events") as response:
        assert client.delete(run["links"]["self"]).status_code == 204
        deleted = None
        for event in Deadline(f"`deleted` for {run['id']} on the feed").events(response):
            if event.type == "deleted":
                deleted = event
                break
    assert deleted is not None
    assert deleted.data == {"id": run["id"]}
