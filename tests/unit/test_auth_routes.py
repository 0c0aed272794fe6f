"""Every route of the app needs the right role: anonymous callers get 401
(the API, with `WWW-Authenticate: Bearer`) or a redirect to /login (pages),
a role that is not enough gets 403, and the role that is, gets in.

The walk is over `app.routes`: a route added without a role (or not listed
here) fails it. The open routes are an explicit, small allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from backend.engines.fake import FakeDocker
from backend.settings import Settings
from backend.web.app import create_app
from backend.web.signin import flat_routes, needed_role
from tests.unit.conftest import bearer, make_token

BASE_URL = "http://127.0.0.1"
ROLES = ["viewer", "operator", "admin"]

# Reachable by anyone: health checks, the sign-in page, the API docs (the
# schema of an open-source API is no secret) and static assets.
OPEN = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/static/swagger-ui/{name}"),
}
OPEN_MOUNTS = {"/static"}

# Everything else, with the least role it needs ("any": any signed-in caller).
NEEDS = {
    ("GET", "/"): "viewer",
    ("GET", "/runs/{run_id}"): "viewer",
    ("GET", "/api/runs"): "viewer",
    ("GET", "/api/runs/{run_id}"): "viewer",
    ("GET", "/api/runs/{run_id}/logs"): "viewer",
    ("GET", "/api/runs/{run_id}/events"): "viewer",
    ("GET", "/api/runs/{run_id}/snapshot"): "viewer",
    ("GET", "/api/runs/{run_id}/lines"): "viewer",
    ("GET", "/api/events"): "viewer",
    ("GET", "/api/stats"): "viewer",
    ("GET", "/api/engines"): "viewer",
    ("GET", "/api/me"): "viewer",
    ("GET", "/metrics"): "viewer",
    ("POST", "/api/runs"): "operator",
    ("POST", "/api/runs/{run_id}/cancel"): "operator",
    ("DELETE", "/api/runs/{run_id}"): "operator",
    ("GET", "/api/audit"): "admin",
    ("POST", "/logout"): "any",
}
# Endless streams: in-process, only their refusals are checked (the real
# server's tests open them with each role: tests/integration/test_auth.py).
ENDLESS = {("GET", "/api/events")}
# Answered like the API (a 401, never a redirect to /login): a scraper is no browser.
MACHINE = {"/metrics"}


def is_api(path: str) -> bool:
    return path.startswith("/api") or path in MACHINE


@pytest.fixture
def app(settings: Settings, daemon: FakeDocker) -> Iterator[FastAPI]:
    app = create_app(settings, engine_factory=daemon)
    yield app
    daemon.close()


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    return {role: make_token(settings, f"{role}-1", role) for role in ROLES}


@pytest.fixture
def client(app: FastAPI, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as test_client:
        yield test_client


def routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for route, path, methods in flat_routes(app):
        assert path is not None, route
        if isinstance(route, Mount):
            assert path in OPEN_MOUNTS, f"a mount nobody classified: {path}"
            continue
        assert isinstance(route, Route), route
        found.update((method, path) for method in methods if method != "HEAD")
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "no-such-run", path)


def request(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
    if method == "POST" and path == "/api/runs":
        kwargs.setdefault("json", {"image": "pullrun/busybox:base"})
    return client.request(method, concrete(path), **kwargs)


def test_every_route_is_classified(app: FastAPI) -> None:
    """A new route must be added to NEEDS (with its role) or, rarely, to OPEN."""
    assert routes(app) == OPEN | set(NEEDS)


def test_the_roles_the_routes_declare_are_the_ones_listed(app: FastAPI) -> None:
    declared = {
        (method, path): needed_role(route)
        for route, path, methods in flat_routes(app)
        for method in methods
    }
    assert {key: role for key, role in declared.items() if key in NEEDS} == NEEDS
    assert all(declared[key] is None for key in OPEN if key in declared)


def test_the_openapi_schema_names_the_role_of_each_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    listed = {
        (method.upper(), path): operation.get("x-required-role")
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    for key, role in listed.items():
        if key in NEEDS:
            assert role == NEEDS[key], key
            operation = schema["paths"][key[1]][key[0].lower()]
            assert {"401", "403"} <= set(operation["responses"]), key
        else:
            assert key in OPEN and role is None, key


@pytest.mark.parametrize(("method", "path"), sorted(NEEDS))
def test_anonymous_callers_are_turned_away(client: TestClient, method: str, path: str) -> None:
    response = request(client, method, path)
    if is_api(path):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
    elif method == "GET":
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    else:
        assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), sorted(NEEDS))
def test_a_bad_token_is_401_everywhere(client: TestClient, method: str, path: str) -> None:
    # (A page sends anyone not signed in to /login instead.)
    refused = 303 if method == "GET" and not is_api(path) else 401
    for token in ("pullrun_" + "A" * 43, "garbage"):
        response = request(client, method, path, headers=bearer(token))
        assert response.status_code == refused, (token, response.text)
    response = request(client, method, path, headers={"Authorization": "Basic YTpi"})
    assert response.status_code == refused


@pytest.mark.parametrize(("method", "path"), sorted(NEEDS))
def test_each_role_gets_in_exactly_where_it_may(
    client: TestClient, tokens: dict[str, str], method: str, path: str
) -> None:
    needed = NEEDS[(method, path)]
    for role in ROLES:
        allowed = needed == "any" or ROLES.index(role) >= ROLES.index(needed)
        if allowed and (method, path) in ENDLESS:
            continue
        response = request(client, method, path, headers=bearer(tokens[role]))
        if allowed:
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["error"]["code"] == "forbidden"
            assert needed in response.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path"), sorted(OPEN - {("POST", "/login")}))
def test_open_routes_answer_anyone(client: TestClient, method: str, path: str) -> None:
    if "{name}" in path:
        path = path.replace("{name}", "swagger-ui.css")
    response = client.request(method, path)
    assert response.status_code in (200, 503), response.text  # /readyz: 503 without engine


def test_health_reveals_nothing_more_to_anyone(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert set(ready) <= {"status", "engine", "api", "error"}
