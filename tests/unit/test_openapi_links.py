"""The OpenAPI links of the schema (docs/api.md): each names an operation
that exists and fills in exactly its path parameters, and a new run (201 of
`POST /api/runs`) links to what one does with it next. Schemathesis'
stateful tests follow them (tests/integration/test_fuzz.py)."""

from __future__ import annotations

from typing import Any

import pytest

from backend.engines.fake import FakeDocker
from backend.settings import Settings
from backend.web.app import create_app


@pytest.fixture
def schema(settings: Settings, daemon: FakeDocker) -> dict[str, Any]:
    return create_app(settings, engine_factory=daemon).openapi()


def operations(schema: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation)."""
    return {
        operation["operationId"]: (method.upper(), path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


def test_every_link_names_an_operation_and_fills_its_path_parameters(
    schema: dict[str, Any],
) -> None:
    by_id = operations(schema)
    links = [
        (name, link)
        for _, _, operation in by_id.values()
        for answer in operation["responses"].values()
        for name, link in answer.get("links", {}).items()
    ]
    assert links
    for name, link in links:
        assert link["operationId"] in by_id, (name, link)
        _, _, target = by_id[link["operationId"]]
        path_parameters = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
        assert set(link["parameters"]) == path_parameters, (name, link)


def test_a_new_run_links_to_reading_cancelling_deleting_it_and_its_log(
    schema: dict[str, Any],
) -> None:
    by_id = operations(schema)
    created = schema["paths"]["/api/runs"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunRecord"
    }
    targets = {
        f"{by_id[link['operationId']][0]} {by_id[link['operationId']][1]}": link["parameters"]
        for link in created["links"].values()
    }
    run_id = {"run_id": "$response.body#/id"}
    assert targets == {
        "GET /api/runs/{run_id}": run_id,
        "POST /api/runs/{run_id}/cancel": run_id,
        "DELETE /api/runs/{run_id}": run_id,
        "GET /api/runs/{run_id}/logs": run_id,
    }
    assert "id" in schema["components"]["schemas"]["RunRecord"]["required"]
