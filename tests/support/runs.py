"""Helpers to start runs and read them to the end, for integration tests."""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import httpx

from tests.support.sse import Event, collect


def remove_image(api: docker.APIClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_image(ref, force=True)


def start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/runs/{record['id']}"
    return record


def run_to_end(client: httpx.Client, **body: Any) -> tuple[dict[str, Any], list[Event]]:
    """Start a run, read its events to `done`, return (final record, events)."""
    record = start(client, **body)
    events = collect(client, record["links"]["events"])
    assert events[-1].type == "done"
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    final = client.get(record["links"]["self"]).json()
    return final, events


def containers_of(api: docker.APIClient, run_id: str) -> list[dict[str, Any]]:
    return list(api.containers(all=True, filters={"label": f"pullrun.run={run_id}"}))
