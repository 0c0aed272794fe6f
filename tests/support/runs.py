"""Helpers to start runs and read them to the end, for integration tests."""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import httpx

from tests.support.sse import Event
from tests.support.wait import DEADLINE, collect, wait_until

# A container that runs until it is stopped: far longer than any test's deadline,
# so a run that ends at all (canceled, timed out) was ended by pullrun.
SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; echo started; sleep 300 & wait"]


def gate(name: str = "gate") -> str:
    """Shell for a container: wait until the test calls open_gate(api, run_id, name).

    Should the test fail before it opens the gate, the gate gives up by itself
    after 3,000 naps of 50 ms (150 s, more than any test waits), so a failed
    test leaves no run behind for long.
    """
    return f"i=0; until [ -e /tmp/{name} ] || [ $i -ge 3000 ]; do i=$((i + 1)); sleep 0.05; done"


def remove_image(api: docker.APIClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_image(ref, force=True)


def start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/runs/{record['id']}"
    return record


def run_to_end(
    client: httpx.Client, *, deadline: float = DEADLINE, **body: Any
) -> tuple[dict[str, Any], list[Event]]:
    """Start a run (`body`), read its events to `done` within `deadline` s,
    return (final record, events)."""
    record = start(client, **body)
    events = collect(client, record["links"]["events"], timeout=deadline)
    assert events[-1].type == "done"
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    final = client.get(record["links"]["self"]).json()
    return final, events


def containers_of(api: docker.APIClient, run_id: str) -> list[dict[str, Any]]:
    return list(api.containers(all=True, filters={"label": f"pullrun.run={run_id}"}))


def open_gate(api: docker.APIClient, run_id: str, name: str = "gate") -> None:
    """Let a run's container past its gate(name) (`touch /tmp/NAME` inside it)."""
    running = wait_until(
        lambda: [c for c in containers_of(api, run_id) if c["State"] == "running"],
        f"run {run_id}'s container to be running (to open {name})",
    )
    exec_id = api.exec_create(running[0]["Id"], ["touch", f"/tmp/{name}"])["Id"]
    api.exec_start(exec_id)
    # The engine records the exit code a moment after the exec's stream ends.
    ended = wait_until(
        lambda: (info := api.exec_inspect(exec_id))["ExitCode"] is not None and info,
        f"the exec that opens {name} in run {run_id} to end",
    )
    assert ended["ExitCode"] == 0, ended
