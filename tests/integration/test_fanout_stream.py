"""Many subscribers of one live run, through the real server: they share
their reads (backend/storage/fanout.py) and their chunks go straight to the
connection (backend/web/connections.py), yet each gets the very bytes a
replay of the finished run gives, every line once, in order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import docker
import httpx

from tests.support.runs import gate, open_gate, start
from tests.support.sse import log_lines
from tests.support.wait import Deadline, events_of, wait_until

SUBSCRIBERS = 20
LINES = 200_000


def body_of(raw: bytes) -> bytes:
    """The events of a raw stream, keepalive comments left out."""
    return b"".join(
        block + b"\n\n" for block in raw.split(b"\n\n") if block and not block.startswith(b":")
    )


def test_many_subscribers_of_a_live_run_get_the_same_bytes(
    client: httpx.Client, image: str, docker_api: docker.APIClient
) -> None:
    record = start(client, image=image, command=["sh", "-c", f"{gate()}; seq 1 {LINES}"])
    url = record["links"]["events"]
    before = client.get("/api/stats").json()["subscribers"]

    def subscribe(_: int) -> bytes:
        with (
            httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as own,
            own.stream("GET", url) as response,
        ):
            assert response.status_code == 200
            return b"".join(Deadline(f"the stream of {url}").chunks(response))

    with ThreadPoolExecutor(SUBSCRIBERS) as pool:
        streams = [pool.submit(subscribe, i) for i in range(SUBSCRIBERS)]
        wait_until(
            lambda: client.get("/api/stats").json()["subscribers"] >= before + SUBSCRIBERS,
            f"{SUBSCRIBERS} subscribers to be connected",
        )
        open_gate(docker_api, record["id"])
        bodies = [body_of(stream.result()) for stream in streams]

    with client.stream("GET", url) as response:  # a replay, alone: read as before
        replay = body_of(b"".join(Deadline(f"the replay of {url}").chunks(response)))
    assert all(body == replay for body in bodies)
    events = events_of(replay)
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "done" and events[-1].data["status"] == "succeeded"
    assert log_lines(events) == [str(i) for i in range(1, LINES + 1)]
