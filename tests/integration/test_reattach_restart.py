"""Re-attach after a restart: the real server is killed (SIGKILL) while runs
pull, print (a line every 50 ms, on stdout and stderr, on a tty, a line left
half printed), wait to exit and wait for their timeout; started again on the
same data dir, it goes on with each of them (backend/runs/reattach.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import docker
import httpx

from backend.runs.reattach import timestamp
from backend.storage.reader import LineJoiner, join_lines
from tests.support.runs import containers_of, gate, open_gate, start
from tests.support.server import ServerFactory
from tests.support.sse import Event
from tests.support.throttle_proxy import ThrottleProxy
from tests.support.wait import DEADLINE, READ_TIMEOUT, Deadline, collect, wait_until

SETTINGS: dict[str, Any] = {"max_concurrent_runs": 8, "partial_line_delay": 0.1}
# Lines every 50 ms until the test opens its gate.
PRINTER = (
    "i=0; while [ ! -e /tmp/gate ]; do i=$((i + 1)); echo out-$i; echo err-$i >&2; "
    "sleep 0.05; done; echo out-end; exit 3"
)
TTY_PRINTER = "i=0; while [ ! -e /tmp/gate ]; do i=$((i + 1)); echo tty-$i; sleep 0.05; done"
HALF_A_LINE = f"printf 'half a line'; {gate()}; echo ' and the rest'; echo after"
ABOUT_TO_EXIT = f"echo start; {gate()}; echo printed-while-down; echo also-on-stderr >&2; exit 7"
# Its timeout (4 s) comes before its own end (6 s): it times out, counted from its start.
TIMEOUT = 4
OUTLIVES_ITS_TIMEOUT = "trap 'exit 143' TERM; echo start; sleep 6 & wait"


def events_until(
    client: httpx.Client, url: str, found: Callable[[Event], bool], what: str
) -> list[Event]:
    """A run's events from the first, until one is `found`."""
    deadline = Deadline(what)
    events: list[Event] = []
    with client.stream("GET", url, timeout=httpx.Timeout(READ_TIMEOUT)) as response:
        assert response.status_code == 200
        for event in deadline.events(response):
            events.append(event)
            if found(event):
                return events
    raise AssertionError(f"{url} ended before {what}: {[e.type for e in events][-10:]}")


def is_notice(text: str) -> Callable[[Event], bool]:
    return lambda e: e.type == "notice" and str(e.data["message"]).startswith(text)


def lines(events: list[Event]) -> dict[str, list[str]]:
    """Each stream's lines, checked to be numbered without a gap or a repeat."""
    joiner = LineJoiner()
    joined = join_lines(events, joiner)
    assert joiner.problems == [], joiner.problems
    assert [line.n for line in joined] == list(range(1, len(joined) + 1))
    by_stream: dict[str, list[str]] = {}
    for line in joined:
        by_stream.setdefault(line.stream, []).append(line.text)
    return by_stream


def numbered(texts: list[str], prefix: str) -> bool:
    """`prefix`1, `prefix`2, ... each exactly once, in order."""
    return texts == [f"{prefix}{k}" for k in range(1, len(texts) + 1)]


def test_a_killed_server_goes_on_with_every_run_where_it_was(
    server_factory: ServerFactory,
    image: str,
    registry: str,
    docker_api: docker.APIClient,
) -> None:
    server = server_factory(**SETTINGS)
    data = server.data_dir
    with ThrottleProxy(registry, rate=64 * 1024) as proxy, server.client() as client:
        runs = {
            "pulling": start(client, image=f"{proxy.address}/pullrun/layers:latest"),
            "printer": start(client, image=image, command=["sh", "-c", PRINTER]),
            "tty": start(client, image=image, command=["sh", "-c", TTY_PRINTER], tty=True),
            "half": start(client, image=image, command=["sh", "-c", HALF_A_LINE], tty=True),
            "exits": start(client, image=image, command=["sh", "-c", ABOUT_TO_EXIT]),
            "timeout": start(
                client,
                image=image,
                command=["sh", "-c", OUTLIVES_ITS_TIMEOUT],
                timeout=TIMEOUT,
            ),
        }
        urls = {name: run["links"]["events"] for name, run in runs.items()}
        # Each where it should be when the server dies.
        events_until(client, urls["pulling"], lambda e: e.type == "pull", "pull progress")
        for name, prefix in (("printer", "err-3"), ("tty", "tty-3")):
            events_until(
                client,
                urls[name],
                lambda e, p=prefix: e.type == "log" and p in e.data["lines"],
                f"{name} to print {prefix}",
            )
        events_until(client, urls["half"], lambda e: e.type == "log", "half a line")
        for name in ("exits", "timeout"):
            events_until(client, urls[name], lambda e: e.type == "log", f"{name} to start")
        server.kill()

        # While it is down: `exits` goes on and ends; the printers print on.
        open_gate(docker_api, runs["exits"]["id"])
        exits_container = containers_of(docker_api, runs["exits"]["id"])[0]["Id"]
        wait_until(
            lambda: not docker_api.inspect_container(exits_container)["State"]["Running"],
            "`exits` to exit while the server is down",
        )

        server = server_factory(data, **SETTINGS)
        with server.client() as again:
            for name in ("printer", "tty", "half"):
                events_until(
                    again,
                    urls[name],
                    is_notice("pullrun restarted: re-attached to its container"),
                    f"{name} to be re-attached",
                )
                open_gate(docker_api, runs[name]["id"])
            ended = {name: collect(again, url) for name, url in urls.items()}
            final = {name: again.get(run["links"]["self"]).json() for name, run in runs.items()}

    for name, events in ended.items():
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1)), name
        assert [e.type for e in events].count("done") == 1 and events[-1].type == "done", name
        assert events[-1].data["status"] == final[name]["status"], name

    pulling = final["pulling"]
    assert (pulling["status"], pulling["error"]["phase"]) == ("error", "interrupted")
    assert pulling["error"]["message"] == "the server stopped while this run was pulling"

    printed = lines(ended["printer"])
    assert (final["printer"]["status"], final["printer"]["exit_code"]) == ("failed", 3)
    assert printed["stdout"][-1] == "out-end" and numbered(printed["stdout"][:-1], "out-")
    assert numbered(printed["stderr"], "err-")
    assert len(printed["stderr"]) == len(printed["stdout"]) - 1
    assert final["printer"]["log_lines"] == 2 * len(printed["stderr"]) + 1

    tty = lines(ended["tty"])
    assert (final["tty"]["status"], final["tty"]["exit_code"]) == ("succeeded", 0)
    assert list(tty) == ["tty"] and numbered(tty["tty"], "tty-")

    half = ended["half"]
    assert any(e.type == "log" and e.data["partial"] for e in half)  # sent before the kill
    assert lines(half) == {"tty": ["half a line and the rest", "after"]}
    assert final["half"]["status"] == "succeeded"

    exits = ended["exits"]
    assert (final["exits"]["status"], final["exits"]["exit_code"]) == ("failed", 7)
    assert lines(exits) == {
        "stdout": ["start", "printed-while-down"],
        "stderr": ["also-on-stderr"],
    }
    assert "pullrun restarted: its container exited meanwhile" in [
        e.data["message"] for e in exits if e.type == "notice"
    ]

    timed = final["timeout"]
    assert timed["status"] == "timed_out", timed
    assert timed["exit_code"] in (143, 0)  # stopped by its timeout, or ended after it

    for run in runs.values():
        assert containers_of(docker_api, run["id"]) == []  # auto_remove, as usual


def test_the_timeout_of_a_run_counts_from_its_container_start(
    server_factory: ServerFactory, image: str, docker_api: docker.APIClient
) -> None:
    """Down until past its deadline (10 s from its start): back, the server
    stops it at once. Counted from the restart instead, its deadline would
    come after its own end (25 s), and it would succeed."""
    server = server_factory(**SETTINGS)
    data = server.data_dir
    command = ["sh", "-c", "trap 'exit 143' TERM; echo start; sleep 25 & wait"]
    with server.client() as client:
        run = start(client, image=image, command=command, timeout=10)
        events_until(client, run["links"]["events"], lambda e: e.type == "log", "its start")
    server.kill()
    container = containers_of(docker_api, run["id"])[0]["Id"]
    started = timestamp(docker_api.inspect_container(container)["State"]["StartedAt"])
    assert started is not None
    wait_until(lambda: time.time() > started + 10, "its deadline to pass", DEADLINE)
    with server_factory(data, **SETTINGS).client() as client:
        events = collect(client, run["links"]["events"])
        record = client.get(run["links"]["self"]).json()
    assert (record["status"], record["exit_code"]) == ("timed_out", 143), record
    notices = [e.data["message"] for e in events if e.type == "notice"]
    assert notices == [
        "pullrun restarted: re-attached to its container",
        "timeout of 10s reached: stopping the container",
    ]
